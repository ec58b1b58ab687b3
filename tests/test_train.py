"""Training loop: learning, outputs, determinism, exact resume, crash safety, CLI errors, DDP."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classical_music import train as train_mod
from classical_music.errors import UserError
from classical_music.model import ComposerLSTM
from classical_music.train import Trainer, TrainConfig, lr_at

REPO = Path(__file__).resolve().parents[1]


def make_cache(out: Path, train_files=6, valid_files=2, length=200, seed=0) -> Path:
    """A token cache of noisy repeats of a few motifs: learnable in a few dozen tiny steps."""
    from classical_music.data.cache import CacheWriter
    from classical_music.tokenizer import get_tokenizer

    tok = get_tokenizer("performance")
    rng = np.random.default_rng(seed)
    motifs = [rng.integers(3, tok.vocab_size, 6) for _ in range(3)]
    writer = CacheWriter(out, tok)
    for i in range(train_files + valid_files):
        body = np.tile(motifs[i % 3], length // 6 + 1)[:length]
        noise = rng.random(length) < 0.05
        body[noise] = rng.integers(3, tok.vocab_size, int(noise.sum()))
        tokens = np.concatenate([[tok.bos_id], body, [tok.eos_id]]).astype(np.uint16)
        writer.add(f"f{i}.mid", 1, 0.0, tokens, split="valid" if i < valid_files else "train")
    if valid_files:  # shorter than a window, so validation sees padding
        writer.add("short.mid", 1, 0.0, np.array([tok.bos_id, *motifs[0], tok.eos_id], np.uint16), split="valid")
    writer.close()
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and a second OpenMP thread stalls badly whenever
    # another process holds the other core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "prepared")


def tiny(cache, save_dir, **kw) -> TrainConfig:
    # 6 files x 200 events / 32 = 42 windows -> 6 steps per epoch at batch 8
    base = dict(data=str(cache), save_dir=str(save_dir), seq_len=32, embed_size=16, hidden_size=32,
                num_layers=2, dropout=0.1, batch_size=8, epochs=3, lr=1e-2, warmup_steps=2,
                eval_every=0, eval_batches=4, save_every=4, log_every=1, num_workers=0, no_progress=True,
                seed=0, transpose=2, stretch=0.1, velocity_shift=1)
    base.update(kw)
    return TrainConfig(**base)


def metrics(save_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(save_dir) / "metrics.jsonl").read_text().splitlines()]


def weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert lr_at(9, cfg, 100) == pytest.approx(1.0)
    lrs = [lr_at(s, cfg, 100) for s in range(10, 120)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_tiny_run_learns_and_writes_checkpoints_and_metrics(cache, tmp_path, capsys):
    run = tmp_path / "run"
    result = train_mod.train(tiny(cache, run, epochs=5, eval_every=5))
    assert result["step"] == 30 and result["stop_reason"] == "all epochs"
    recs = metrics(run)
    assert [r["step"] for r in recs] == list(range(1, 31))
    for r in recs:
        assert {"step", "epoch", "train_loss", "lr", "tokens_per_second"} <= r.keys()
    vals = [r for r in recs if "val_nats_per_event" in r]
    assert [r["step"] for r in vals] == [5, 6, 10, 12, 15, 18, 20, 24, 25, 30]  # eval_every + epoch ends
    assert all(r["val_perplexity"] == pytest.approx(np.exp(r["val_nats_per_event"]), rel=1e-3) for r in vals)
    assert np.mean([r["train_loss"] for r in recs[-5:]]) < recs[0]["train_loss"] - 1.0
    assert min(r["val_nats_per_event"] for r in vals) < vals[0]["val_nats_per_event"] - 0.5
    assert result["best_val_nats_per_event"] == pytest.approx(min(r["val_nats_per_event"] for r in vals), abs=1e-4)

    for name in ("best", "last"):
        files = set(os.listdir(run / name))
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
        m = ComposerLSTM.from_pretrained(run / name)
        assert m.tokenizer.name == "performance" and m.config.hidden_size == 32
    assert {"trainer_state.json", "trainer_state.safetensors"} <= set(os.listdir(run / "last"))
    info = json.loads((run / "best" / "config.json").read_text())["training"]
    assert info["best_val_nats_per_event"] == pytest.approx(result["best_val_nats_per_event"])
    at_best = next(r for r in recs if r["step"] == info["step"])
    assert info["tokens_seen"] == at_best["tokens_seen"] > 0
    assert info["hardware"].endswith(f", {torch.get_num_threads()} thread(s)")  # model cards' training time needs it
    assert info["recipe"] is None  # no --config
    assert list((run / "tensorboard").iterdir())
    out = capsys.readouterr().out
    assert "trained 30 steps" in out and "best val" in out and str(run / "best") in out
    # each log line says how long the rest takes at this window's pace (validation left out)
    assert " eta " in next(line for line in out.splitlines() if line.startswith("step 5/30"))
    assert " eta " not in next(line for line in out.splitlines() if line.startswith("step 30/30"))


def test_validation_is_mean_nats_over_non_pad_targets(cache, tmp_path):
    t = Trainer(tiny(cache, tmp_path / "run", eval_batches=1000))
    t.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(t.valid_ds)):
            x, y, *c = t.valid_ds[i]  # conditions ride along when the cache has them
            logits, _ = t.model(x[None], cond=c[0][None] if c else None)
            total += F.cross_entropy(logits[0], y, ignore_index=0, reduction="sum").item()
            count += int((y != 0).sum())
    assert (t.valid_ds[len(t.valid_ds) - 1][1] == 0).any()  # the last window is padded
    assert t.evaluate() == pytest.approx(total / count, rel=1e-5)


def test_same_seed_same_weights(cache, tmp_path):
    train_mod.train(tiny(cache, tmp_path / "a", max_steps=8))
    train_mod.train(tiny(cache, tmp_path / "b", max_steps=8))
    train_mod.train(tiny(cache, tmp_path / "c", max_steps=8, seed=1))
    assert_same_weights(tmp_path / "a" / "last", tmp_path / "b" / "last")
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "a" / "last", tmp_path / "c" / "last")


class Crash(Exception):
    pass


def test_resume_after_crash_matches_a_straight_run(cache, tmp_path, monkeypatch, capsys):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    kw = dict(max_steps=14, eval_every=3)
    train_mod.train(tiny(cache, straight, **kw))

    real_step, calls = Trainer.train_step, []

    def dies_at_step_10(self, *batch):
        calls.append(1)
        if len(calls) == 10:  # last/ was written at step 8: steps 9 and 10 are lost
            raise Crash
        return real_step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", dies_at_step_10)
    with pytest.raises(Crash):
        train_mod.train(tiny(cache, crashed, **kw))
    monkeypatch.undo()
    assert json.loads((crashed / "last" / "trainer_state.json").read_text())["step"] == 8

    # resume through the command line: only --resume and --save_dir, the rest comes from the run
    assert train_mod.main(["--resume", "--save_dir", str(crashed), "--no_progress", "--num_workers", "0"]) == 0
    assert "resuming at step 8" in capsys.readouterr().out
    assert_same_weights(straight / "last", crashed / "last")
    assert_same_weights(straight / "best", crashed / "best")
    a, b = metrics(straight), metrics(crashed)
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, 15))
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == rb["train_loss"] and ra.get("val_nats_per_event") == rb.get("val_nats_per_event")

    # resuming a finished run does nothing and says so
    before = (crashed / "last" / "trainer_state.json").read_text()
    result = train_mod.train(replace(tiny(cache, crashed, **kw), resume="last"))
    assert result["step"] == 14
    assert "already finished at step 14" in capsys.readouterr().out
    assert (crashed / "last" / "trainer_state.json").read_text() == before
    with pytest.raises(UserError, match="hidden_size"):
        Trainer(tiny(cache, crashed, hidden_size=64, resume="last"))


def test_resume_from_a_save_between_log_points_counts_every_token(cache, tmp_path, monkeypatch):
    # last/ at step 5 lies between the log points at 4 and 6 (an epoch end): step 5 must not be lost
    kw = dict(max_steps=8, save_every=5, log_every=4)
    train_mod.train(tiny(cache, tmp_path / "straight", **kw))
    real_step, calls = Trainer.train_step, []

    def dies_at_step_6(self, *batch):
        calls.append(1)
        if len(calls) == 6:
            raise Crash
        return real_step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", dies_at_step_6)
    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        train_mod.train(tiny(cache, crashed, **kw))
    monkeypatch.undo()
    state = json.loads((crashed / "last" / "trainer_state.json").read_text())
    assert state["step"] == 5
    at_4 = metrics(crashed)[-1]
    assert at_4["step"] == 4 and state["tokens_seen"] > at_4["tokens_seen"]
    assert state["elapsed_seconds"] > at_4["elapsed_seconds"]
    train_mod.train(replace(tiny(cache, crashed, **kw), resume="last"))
    a, b = metrics(tmp_path / "straight"), metrics(crashed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 6, 8]
    assert [r["tokens_seen"] for r in b] == [r["tokens_seen"] for r in a]


def test_crash_while_saving_keeps_the_previous_checkpoint(cache, tmp_path, monkeypatch):
    import safetensors.torch

    run = tmp_path / "run"
    train_mod.train(tiny(cache, run, max_steps=4))
    good = weights(run / "last")
    real_save = safetensors.torch.save_file

    def torn_write(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata)
        with open(filename, "r+b") as f:
            f.truncate(50)
        raise Crash  # as if killed right here

    monkeypatch.setattr(safetensors.torch, "save_file", torn_write)
    with pytest.raises(Crash):
        train_mod.train(tiny(cache, run, max_steps=8, resume="last"))
    monkeypatch.undo()
    for k, v in weights(run / "last").items():
        assert torch.equal(v, good[k])
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 4
    # and the run picks up from there
    assert train_mod.train(tiny(cache, run, max_steps=8, resume="last"))["step"] == 8


def test_kill_9_during_training_leaves_a_resumable_checkpoint(cache, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "classical_music.train", "--data", str(cache), "--save_dir", str(run),
           "--seq_len", "32", "--embed_size", "16", "--hidden_size", "32", "--num_layers", "2",
           "--batch_size", "8", "--max_steps", "100000", "--save_every", "1", "--log_every", "1",
           "--eval_every", "0", "--num_workers", "0", "--no_progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not (run / "last" / "trainer_state.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.7)  # a few dozen checkpoint swaps in: the kill lands mid-something
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    m = ComposerLSTM.from_pretrained(run / "last")
    more = dict(resume="last", epochs=100, dropout=0.2)
    step = Trainer(tiny(cache, run, max_steps=100000, **more)).step
    assert step >= 1 and m.config.hidden_size == 32
    assert train_mod.train(tiny(cache, run, max_steps=step + 2, **more))["step"] == step + 2


def test_missing_data_is_a_helpful_exit_2(tmp_path, capsys):
    assert train_mod.main(["--data", str(tmp_path / "nope"), "--save_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"no prepared data at {tmp_path / 'nope'}" in err
    assert "classical-music data prepare" in err and "Traceback" not in err


def test_nothing_to_resume_is_a_user_error(cache, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        Trainer(tiny(cache, tmp_path / "empty", resume="last"))


def test_config_file_then_flags(tmp_path):
    import argparse

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"_comment": "shipped model", "hidden_size": 24, "lr": 1, "epochs": 7}))
    p = argparse.ArgumentParser()
    train_mod.add_arguments(p)
    cfg = train_mod.config_from_args(p.parse_args(["--config", str(recipe), "--hidden_size", "20"]))
    assert (cfg.hidden_size, cfg.lr, cfg.epochs, cfg.batch_size) == (20, 1.0, 7, 64)
    recipe.write_text(json.dumps({"hidden": 24}))
    with pytest.raises(UserError, match="unknown field"):
        train_mod.config_from_args(p.parse_args(["--config", str(recipe)]))
    recipe.write_text(json.dumps({"hidden_size": "big"}))
    with pytest.raises(UserError, match="hidden_size"):
        train_mod.config_from_args(p.parse_args(["--config", str(recipe)]))
    with pytest.raises(UserError, match="batch_size"):
        TrainConfig(batch_size=0).validate()


def test_without_a_valid_split_best_is_the_last_model(tmp_path):
    data = make_cache(tmp_path / "prepared", valid_files=0)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="no valid split"):
        result = train_mod.train(tiny(data, run, max_steps=5))
    assert result["best_val_nats_per_event"] is None
    assert all("val_nats_per_event" not in r for r in metrics(run))
    assert_same_weights(run / "best", run / "last")


DDP_DRIVER = textwrap.dedent("""
    import hashlib, json, sys
    from classical_music.data import dataset
    from classical_music.train import Trainer, TrainConfig

    seen, real_getitem = [], dataset.WindowDataset.__getitem__
    def recording_getitem(self, i):
        if self.split == "train":
            seen.append([self.epoch, int(i)])
        return real_getitem(self, i)
    dataset.WindowDataset.__getitem__ = recording_getitem

    trainer = Trainer(TrainConfig(**json.loads(sys.argv[1])))
    rank = trainer.dist.rank
    trainer.fit()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters()))
    with open(f"{sys.argv[2]}/rank{rank}.json", "w") as f:
        json.dump({"seen": seen, "digest": digest.hexdigest(), "world": trainer.dist.world}, f)
""")


def test_ddp_two_cpu_processes(cache, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    cfg = tiny(cache, tmp_path / "run", max_steps=5, eval_every=2, save_every=2, transpose=0, stretch=0.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), json.dumps(cfg.__dict__), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    s0, s1 = {tuple(s) for s in r0["seen"]}, {tuple(s) for s in r1["seen"]}
    # 42 windows split 21/21: 3 steps (8+8+5) per epoch on each rank, so 5 steps draw 21+16
    assert len(r0["seen"]) == len(r1["seen"]) == 37
    assert not s0 & s1  # no window on both ranks in the same epoch
    assert r0["digest"] == r1["digest"]  # gradients averaged: replicas stay identical
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 5 and state["world_size"] == 2
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5]
    from safetensors.torch import load_file

    rng = load_file(str(tmp_path / "run" / "last" / "trainer_state.safetensors"))
    assert not torch.equal(rng["rng.torch.rank0"], rng["rng.torch.rank1"])  # dropout differs per rank


def test_init_from_starts_from_the_weights_and_their_shape(cache, tmp_path, capsys):
    train_mod.train(tiny(cache, tmp_path / "a", max_steps=6))
    # other default sizes, a learning rate too small to move anything: the weights must carry over
    cfg = tiny(cache, tmp_path / "b", max_steps=1, lr=1e-12, hidden_size=64, init_from=str(tmp_path / "a" / "last"))
    train_mod.train(cfg)
    a, b = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert ComposerLSTM.from_pretrained(tmp_path / "b" / "last").config.hidden_size == 32
    assert "starting from the weights of" in capsys.readouterr().out
    # and from scratch the same flags would differ
    train_mod.train(tiny(cache, tmp_path / "c", max_steps=1, lr=1e-12))
    assert not torch.allclose(weights(tmp_path / "c" / "last")["head.weight"], a["head.weight"])


def test_init_from_the_shipped_model_or_a_bad_path(cache, tmp_path, capsys):
    t = Trainer(tiny(cache, tmp_path / "d", init_from="default"))
    assert t.model.config.hidden_size == json.loads(
        (REPO / "src/classical_music/pretrained/default/config.json").read_text())["hidden_size"]
    assert next(t.model.parameters()).dtype == torch.float32
    assert train_mod.main(["--data", str(cache), "--save_dir", str(tmp_path / "e"),
                           "--init_from", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


def test_a_run_started_with_init_from_resumes_with_the_same_command(cache, tmp_path):
    common = ["--data", str(cache), "--seq_len", "32", "--embed_size", "16", "--num_layers", "2",
              "--batch_size", "8", "--eval_every", "0", "--eval_batches", "2", "--save_every", "2",
              "--log_every", "1", "--num_workers", "0", "--no_progress", "--warmup_steps", "1"]
    assert train_mod.main([*common, "--hidden_size", "32", "--max_steps", "2", "--save_dir", str(tmp_path / "a")]) == 0
    # the flag says 64, the weights say 32: the weights win, and again when resuming
    b = [*common, "--hidden_size", "64", "--init_from", str(tmp_path / "a" / "last"), "--save_dir", str(tmp_path / "b")]
    assert train_mod.main([*b, "--max_steps", "2"]) == 0
    assert train_mod.main([*b, "--max_steps", "4", "--resume"]) == 0
    assert json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())["step"] == 4
    assert ComposerLSTM.from_pretrained(tmp_path / "b" / "last").config.hidden_size == 32


def test_data_pointing_at_midi_files_names_a_separate_cache(tmp_path, capsys, monkeypatch):
    from conftest import scale, write_midi

    corpus = tmp_path / "corpus"
    write_midi(corpus / "a" / "p.mid", scale(8))
    monkeypatch.chdir(tmp_path)
    assert train_mod.main(["--data", str(corpus), "--save_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{corpus} holds MIDI files, not a prepared cache" in err
    assert f"data prepare {corpus} --out data/prepared`" in err and "--data data/prepared" in err
    # a corpus that is ./data itself: the cache must not land inside it
    write_midi(tmp_path / "data" / "q.mid", scale(8))
    assert train_mod.main(["--data", "data", "--save_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--out data-prepared`" in err and "--out data/prepared" not in err


def test_a_new_run_into_a_folder_holding_a_run_is_refused(cache, tmp_path, capsys):
    run = tmp_path / "run"
    train_mod.train(tiny(cache, run, max_steps=2))
    before = (run / "metrics.jsonl").read_text()
    argv = ["--data", str(cache), "--save_dir", str(run), "--seq_len", "32", "--embed_size", "16",
            "--hidden_size", "32", "--num_layers", "2", "--batch_size", "8", "--max_steps", "1",
            "--num_workers", "0", "--no_progress", "--log_every", "1"]
    assert train_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_text() == before and (run / "best").is_dir()
    (run / "notes.txt").write_text("mine")
    assert train_mod.main([*argv, "--overwrite"]) == 0
    assert [r["step"] for r in metrics(run)] == [1]
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 1
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files go
    # --overwrite is where to run, not what: a resumed run does not inherit it
    assert "overwrite" in train_mod.ENV_FIELDS


def test_the_estimate_comes_after_a_few_steps_with_the_faster_options(cache, tmp_path, capsys, monkeypatch):
    from classical_music.train import session

    train_mod.train(tiny(cache, tmp_path / "a", max_steps=12))
    out = capsys.readouterr().out
    assert "estimate: 8 more steps at" in out and "on cpu" in out
    assert "small_cpu_model.json" not in out  # a short run needs no advice
    monkeypatch.setattr(session, "SLOW_SECONDS", 0.0)
    train_mod.train(tiny(cache, tmp_path / "b", max_steps=12, hidden_size=400))  # bigger than the small recipe
    out = capsys.readouterr().out
    assert "--config recipes/small_cpu_model.json" in out and "--max_steps" in out and "--device cuda" in out
    assert out.index("estimate:") < out.index("step 5/12")  # after the first steps, not at the end
    # issue 27 item 15: a model already the small recipe's size (or smaller) is not told to use it
    train_mod.train(tiny(cache, tmp_path / "c", max_steps=12))
    out = capsys.readouterr().out
    assert "faster:" in out and "--max_steps" in out and "small_cpu_model.json" not in out
    assert session.duration(91_100 * 6.5) == "6.9 days" and session.duration(5400) == "1.5 h"


def test_ctrl_c_saves_last_and_exits_130(cache, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "classical_music.train", "--data", str(cache), "--save_dir", str(run),
           "--seq_len", "32", "--embed_size", "16", "--hidden_size", "32", "--num_layers", "2",
           "--batch_size", "8", "--max_steps", "100000", "--epochs", "100000", "--save_every", "100000",
           "--log_every", "1", "--eval_every", "0", "--num_workers", "1", "--no_progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT to the whole process group, as a terminal's Ctrl-C does: the DataLoader worker gets it too
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (
                (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3):
            time.sleep(0.05)
        assert not (run / "last").exists()  # nothing saved yet: --save_every is far away
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    state = json.loads((run / "last" / "trainer_state.json").read_text())
    assert state["step"] >= 3 and state["stop_reason"] == "interrupted"
    assert f"interrupted at step {state['step']}" in out and "--resume" in out
    assert metrics(run)[-1]["step"] == state["step"]
    t = Trainer(tiny(cache, run, max_steps=100000, epochs=100000, resume="last", dropout=0.2))
    assert t.step == state["step"]


def test_sigterm_saves_last_and_the_run_resumes(cache, tmp_path, monkeypatch):
    run, calls = tmp_path / "run", []
    real_step = Trainer.train_step

    def terminated_during_step_3(self, *batch):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a job scheduler would
        return real_step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", terminated_during_step_3)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    result = train_mod.train(tiny(cache, run, max_steps=40, save_every=100, log_every=10))
    monkeypatch.undo()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back
    assert result["stop_reason"] == "interrupted" and result["step"] == 3  # the step in flight finishes
    state = json.loads((run / "last" / "trainer_state.json").read_text())
    assert (state["step"], state["stop_reason"]) == (3, "interrupted")
    assert [r["step"] for r in metrics(run)] == [3] and "val_nats_per_event" not in metrics(run)[0]
    assert train_mod.train(tiny(cache, run, max_steps=5, resume="last"))["step"] == 5


def test_stopped_before_validation_says_what_was_saved_and_best_falls_back_to_last(cache, tmp_path, monkeypatch,
                                                                                   capsys):
    # issue 27 item 13: the line promised best/ that did not exist, and `--checkpoint run/best` then failed
    from classical_music import cli

    run, calls = tmp_path / "run", []
    real_step = Trainer.train_step

    def terminated_during_step_2(self, *batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", terminated_during_step_2)
    train_mod.train(tiny(cache, run, max_steps=40, save_every=100, log_every=10))
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert not (run / "best").exists() and (run / "last" / "config.json").is_file()
    assert "(and" not in out and f"no {run / 'best'} yet" in out and f"--checkpoint {run / 'last'}" in out
    for given in (run / "best", run):  # the README's path, and the save dir itself
        model = ComposerLSTM.from_pretrained(given)
        assert model.config.hidden_size == 32
        assert f"using {run / 'last'}" in capsys.readouterr().err
    assert cli.main(["generate", "--checkpoint", str(run / "best"), "--seconds", "1", "--seed", "1",
                     "--output", str(tmp_path / "o.mid")]) == 0
    assert (tmp_path / "o.mid").is_file() and f"using {run / 'last'}" in capsys.readouterr().err
