import pytest
import torch

from classical_music import cli, threads
from classical_music.errors import UserError


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_default_leaves_half_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, want in ((1, 1), (2, 1), (3, 1), (16, 8)):
        monkeypatch.setattr(threads, "cores", lambda c=cores: c)
        assert threads.default_threads() == want
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice wins
    assert threads.default_threads() == 3


def test_apply_sets_and_checks():
    assert threads.apply(2) == 2 and torch.get_num_threads() == 2
    for bad in (-1, True, 1.5):
        with pytest.raises(UserError, match="--threads"):
            threads.apply(bad)


@pytest.mark.parametrize("command", ["train", "evaluate", "generate", "serve"])
def test_every_command_takes_threads(command):
    args = cli.build_parser().parse_args([command, *(["x.mid"] if command == "evaluate" else []), "--threads", "2"])
    assert args.threads == 2


def test_evaluate_runs_a_lane_per_core_by_default_and_threads_sets_them(monkeypatch, tmp_path):
    from classical_music import evaluate as E
    from conftest import scale, write_midi

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    assert threads.default_lanes() == 4 and threads.default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_lanes() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    seen = []
    monkeypatch.setattr(E, "evaluate", lambda *a, **k: seen.append(k["lanes"]) or (_ for _ in ()).throw(SystemExit))
    write_midi(tmp_path / "a.mid", scale(10))
    for argv, want in (([], 4), (["--threads", "0"], 4), (["--threads", "1"], 1), (["--threads", "3"], 3)):
        with pytest.raises(SystemExit):
            cli.main(["evaluate", str(tmp_path / "a.mid"), "--no_progress", *argv])
        assert seen[-1] == want


def test_threads_0_is_the_default_in_every_command(monkeypatch, capsys):
    # issue 27 item 15: 0 meant "half the cores" in train and was an error in generate
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    torch.set_num_threads(3)
    assert threads.apply(0) == 2 and threads.apply(None) == 2 and torch.get_num_threads() == 2
    torch.set_num_threads(3)
    assert cli.main(["generate", "--threads", "0", "--list_conditions"]) == 0  # no longer exit 2
    assert torch.get_num_threads() == 2 and "composer" in capsys.readouterr().out
    for command in ("train", "evaluate", "generate", "serve"):
        help_text = cli.build_parser()._subparsers._group_actions[0].choices[command].format_help()
        assert "default, or 0:" in " ".join(help_text.split()), command


def test_a_studio_job_and_a_live_answer_at_once_leave_the_threads_alone(tmp_path, monkeypatch):
    """Threads are set once per process (threads.apply); decoding never saves and restores them, so
    a job and an answer decoding side by side cannot leave the process at one thread."""
    import threading

    import numpy as np

    pytest.importorskip("fastapi")
    from classical_music.model import ComposerLSTM, ModelConfig
    from classical_music.notes import Notes
    from classical_music.tokenizer import get_tokenizer
    from classical_music.web.live import Live
    from classical_music.web.studio import Studio

    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=1))
    with torch.no_grad():
        model.head.bias[tok.eos_id] = -20
    model.save_pretrained(tmp_path / "ck", tokenizer=tok)
    threads.apply(2)
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
    studio = Studio(tmp_path / "ck", tmp_path / "out")
    studio.model()
    job = studio.submit(studio.check(6.0, 1.0, 1.0, 1, 2))
    played = Notes(np.array([0.0, 0.5]), np.array([0.4, 0.9]), np.array([60, 64], np.int16), np.array([70, 70], np.int16))
    answers = [threading.Thread(target=Live(studio).answer, args=(played, 3.0, 1.0, 1.0, s)) for s in (1, 2)]
    for t in answers:
        t.start()
    for t in answers:
        t.join(120)
    for _ in range(600):
        if job.status in ("done", "error"):
            break
        threading.Event().wait(0.2)
    studio.close()
    assert job.status == "done", job.error
    assert calls == [] and torch.get_num_threads() == 2
