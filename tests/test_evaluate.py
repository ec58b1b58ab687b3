import json
import math

import numpy as np
import pytest
import torch

from classical_music import cli
from classical_music.errors import UserError
from classical_music.evaluate import file_nll
from classical_music.model import ComposerLSTM, ModelConfig
from classical_music.tokenizer import get_tokenizer

from conftest import scale, write_midi


@pytest.fixture
def uniform_checkpoint(tmp_path):
    """A model whose logits are constant: it must score exactly log(V) nats per event."""
    tok = get_tokenizer("performance")
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=1))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    path = tmp_path / "ck"
    model.save_pretrained(path, tokenizer=tok)
    return path


def run(*argv):
    return cli.main(["evaluate", *map(str, argv), "--no_progress"])


def test_constant_logits_score_log_v(uniform_checkpoint, tmp_path, capsys):
    src = tmp_path / "midi"
    write_midi(src / "a.mid", scale(30))
    write_midi(src / "b.mid", scale(50, base=40))
    (src / "bad.mid").write_bytes(b"MThd garbage")
    (src / "empty.mid").write_bytes(b"")
    out = tmp_path / "r.json"
    assert run(src, "--checkpoint", uniform_checkpoint, "--json", out) == 0
    r = json.loads(out.read_text())
    v = get_tokenizer("performance").vocab_size
    assert r["nats_per_event"] == pytest.approx(math.log(v), abs=1e-4)
    assert r["perplexity"] == pytest.approx(v, rel=1e-3)
    assert r["files"] == 2 and len(r["skipped"]) == 2 and r["notes"] == 80
    assert r["nats_per_note"] == pytest.approx(math.log(v) * r["events"] / 80, rel=1e-4)
    assert r["bits_per_second"] == pytest.approx(math.log2(v) * r["events"] / r["seconds"], rel=1e-3)
    assert r["tokenizer"]["name"] == "performance" and r["tokenizer"]["time_step_seconds"] == 0.01
    said = capsys.readouterr()
    line = said.out.strip().splitlines()
    assert len(line) == 1 and "nats/event" in line[0]
    assert "skipped" in said.err and "bad.mid" in said.err and "empty.mid" in said.err  # which, on the terminal


def test_state_is_carried_across_chunks(tmp_path):
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=2)).eval()
    with torch.no_grad():  # strong weights, so the past visibly matters
        for p in model.parameters():
            p.mul_(4)
    tokens = np.random.default_rng(0).integers(3, tok.vocab_size, 500).astype(np.uint16)
    whole = file_nll(model, tokens, chunk=10_000)
    assert file_nll(model, tokens, chunk=37) == pytest.approx(whole, abs=1e-2)
    # resetting the state per chunk would give a different number: the test can tell
    reset = sum(file_nll(model, tokens[i: i + 38], chunk=10_000) for i in range(0, 499, 37))
    assert abs(reset - whole) > 1.0


def test_only_bad_files_is_exit_2(uniform_checkpoint, tmp_path, capsys):
    (tmp_path / "x.mid").write_text("nope")
    assert run(tmp_path / "x.mid", "--checkpoint", uniform_checkpoint) == 2
    assert "no usable MIDI" in capsys.readouterr().err


def test_split_selects_files_from_metadata(uniform_checkpoint, tmp_path):
    src = tmp_path / "c"
    write_midi(src / "a.mid", scale(10))
    write_midi(src / "b.mid", scale(20))
    (src / "metadata.csv").write_text("path,split\na.mid,train\nb.mid,valid\n")
    out = tmp_path / "r.json"
    assert run(src, "--split", "valid", "--checkpoint", uniform_checkpoint, "--json", out) == 0
    r = json.loads(out.read_text())
    assert r["files"] == 1 and r["notes"] == 20


def tiny_model_and_scales(tmp_path, n, notes, hidden=16, layers=1):
    """A small random model with the performance tokenizer, and n scales of notes(i) notes each."""
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=hidden,
                                     num_layers=layers)).eval()
    model.tokenizer = tok
    files = [tmp_path / f"{i}.mid" for i in range(n)]
    for i, f in enumerate(files):
        write_midi(f, scale(notes(i), base=40 + i))
    return model, files


def test_tokens_kept_within_budget_else_reread(tmp_path, monkeypatch):
    from classical_music import evaluate as E

    model, files = tiny_model_and_scales(tmp_path, 3, lambda i: 20 + 10 * i)
    reads = []
    real = E._read
    monkeypatch.setattr(E, "_read", lambda p, t: reads.append(p) or real(p, t))
    kept = E.evaluate(model, files, progress=False)
    assert len(reads) == 3  # one pass: all three fit the budget
    reads.clear()
    monkeypatch.setattr(E, "KEEP_EVENTS", 0)
    reread = E.evaluate(model, files, progress=False)
    assert len(reads) == 6  # nothing kept: the second pass reads every file again
    assert kept == reread


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_lanes_score_as_one_batch_does_and_a_failing_lane_stops_them_all(tmp_path, monkeypatch, precision):
    from classical_music import evaluate as E
    from classical_music.decoding import int8_available

    if precision == "int8" and not int8_available():
        pytest.skip("no int8 kernels in this PyTorch")
    model, files = tiny_model_and_scales(tmp_path, 7, lambda i: 15 + 40 * i, hidden=32, layers=2)
    one = E.evaluate(model, files, progress=False, precision=precision, lanes=1, chunk=64)
    three = E.evaluate(model, files, progress=False, precision=precision, lanes=3, chunk=64)
    assert [f["path"] for f in three["per_file"]] == [f["path"] for f in one["per_file"]]
    for a, b in zip(one["per_file"], three["per_file"]):
        assert b["nats_per_event"] == pytest.approx(a["nats_per_event"], abs=1e-4 if precision == "float32" else 2e-3)
    assert three["events"] == one["events"]
    lanes = E._split(sorted(range(7), key=lambda i: -i), {i: (100 * (i + 1),) for i in range(7)}, 3)
    assert sorted(sum(lanes, [])) == list(range(7)) and len(lanes) == 3  # every file once, in three lanes
    # One read fails in another lane than the long file's: every lane stops at its next chunk.
    write_midi(files[6], scale(3000, base=30))  # ~9,000 events: its lane alone, ~140 chunks of 64
    monkeypatch.setattr(E, "KEEP_EVENTS", 0)  # lanes read their files again, and one read fails
    real = E._reread
    monkeypatch.setattr(E, "_reread", lambda p, t, n: (_ for _ in ()).throw(UserError("gone")) if p == files[2]
                        else real(p, t, n))
    calls = []
    make = E.scoring.make_forward

    def counting(*a, **k):
        f = make(*a, **k)
        return lambda *x: calls.append(1) or f(*x)

    monkeypatch.setattr(E.scoring, "make_forward", counting)
    before = torch.get_num_threads()
    with pytest.raises(UserError, match="gone"):
        E.evaluate(model, files, progress=False, precision=precision, lanes=3, chunk=64)
    assert torch.get_num_threads() == before  # restored
    assert len(calls) < 40  # the long file's lane did not run on to its end


def test_a_split_typo_or_a_folder_without_splits_names_the_problem(uniform_checkpoint, tmp_path, capsys):
    # issue 27 item 14: both said "no MIDI files found" with the files right there
    src = tmp_path / "c"
    write_midi(src / "a.mid", scale(10))
    write_midi(src / "b.mid", scale(20))
    assert run(src, "--split", "valid", "--checkpoint", uniform_checkpoint) == 2
    err = capsys.readouterr().err
    assert "no metadata.csv giving splits" in err and "2 MIDI files" in err and "no MIDI files found" not in err
    (src / "metadata.csv").write_text("path,split\na.mid,train\nb.mid,valid\n")
    assert run(src, "--split", "vaild", "--checkpoint", uniform_checkpoint) == 2
    err = capsys.readouterr().err
    assert "no such split" in err and "did you mean valid?" in err and "train, valid" in err
    assert len(err.strip().splitlines()) == 1


def test_progress_lines_when_stderr_is_not_a_terminal(uniform_checkpoint, tmp_path, capsys, monkeypatch):
    from classical_music import evaluate

    for i in range(3):
        write_midi(tmp_path / "m" / f"{i}.mid", scale(40, base=40 + i))
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY", 0.0)  # a line at every update instead of every 10 s
    assert cli.main(["evaluate", str(tmp_path / "m"), "--checkpoint", str(uniform_checkpoint),
                     "--threads", "1"]) == 0  # capsys: stderr is no terminal
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("evaluate: ")]
    assert lines and "events/s" in lines[-1] and "left" in lines[-1] and "\r" not in err
    assert any(ln.startswith("reading: ") and "/3 files" in ln for ln in err.splitlines())
    assert cli.main(["evaluate", str(tmp_path / "m"), "--checkpoint", str(uniform_checkpoint), "--no_progress"]) == 0
    assert "evaluate: " not in capsys.readouterr().err
