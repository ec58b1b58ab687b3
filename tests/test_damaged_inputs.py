"""Damaged or odd local files (issue 27, items 6-8): fifos where inputs should be, absurd model
sizes, broken trainer state, config, tokenizer and metadata files, and NaN weights. Each is one
line on stderr and exit 2, quickly, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from classical_music import cli
from classical_music import train as train_mod

from conftest import scale, write_midi
from test_hostile import _guarded
from test_train import make_cache, one_thread, tiny  # noqa: F401  (one_thread: an autouse fixture)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A cache and a finished 2-step run (best/ and last/), copied by each test that damages it."""
    root = tmp_path_factory.mktemp("run")
    cache = make_cache(root / "cache")
    train_mod.train(tiny(cache, root / "run", max_steps=2, save_every=2, epochs=1))
    return root


def copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "w")
    return tmp_path / "w" / "cache", tmp_path / "w" / "run"


def one_line(capsys, *argv, timeout: float = 60) -> str:
    """Run the CLI in a thread (a blocking open fails the test instead of hanging it): exit 2, one line."""
    rc = _guarded(lambda: cli.main([str(a) for a in argv]), timeout)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def resume_args(cache, run):
    return ["train", "--data", cache, "--save_dir", run, "--resume", "--max_steps", "4", "--no_progress",
            "--num_workers", "0"]


def fifo(path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no fifos here")
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def unblock(path):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


# ------------------------------------------------------------------------------------------
# 6: a fifo wherever an input is opened


@pytest.mark.parametrize("where", ["trainer_state", "tokenizer", "manifest", "config", "cache_json"])
def test_a_fifo_input_is_refused_at_once(run, tmp_path, capsys, where):
    cache, save = copy(run, tmp_path)
    src = tmp_path / "src"
    write_midi(src / "a.mid", scale(8))
    prepare = ["data", "prepare", src, "--out", cache, "--workers", "1", "--no_progress"]
    target = {"trainer_state": save / "last" / "trainer_state.safetensors", "tokenizer": cache / "tokenizer.json",
              "manifest": cache / "manifest.jsonl", "config": tmp_path / "recipe.json",
              "cache_json": cache / "cache.json"}[where]
    fifo(target)
    try:
        t0 = time.perf_counter()
        if where == "trainer_state":
            err = one_line(capsys, *resume_args(cache, save))
        elif where == "config":
            err = one_line(capsys, "train", "--data", cache, "--save_dir", tmp_path / "new", "--config", target)
            assert err.startswith("error: --config ")
        elif where == "cache_json":  # only statistics: prepare rewrites it and goes on
            assert _guarded(lambda: cli.main([str(a) for a in prepare])) == 0
            assert json.loads((cache / "cache.json").read_text())["files"] >= 1
            return
        else:
            err = one_line(capsys, *prepare)
            if where == "tokenizer":  # training reads it too
                assert "not a regular file (a fifo)" in one_line(capsys, "train", "--data", cache, "--save_dir",
                                                                tmp_path / "new")
        assert f"{target}: not a regular file (a fifo)" in err
        assert time.perf_counter() - t0 < 30
    finally:
        unblock(target)


# ------------------------------------------------------------------------------------------
# 7: absurd sizes in config.json, refused before anything is built


@pytest.mark.parametrize("change", [{"num_layers": 100_000}, {"hidden_size": 10**9}, {"hidden_size": 1e9},
                                    {"num_layers": 200}, {"embed_size": 4096}])
def test_absurd_config_sizes_are_one_line_at_once(run, tmp_path, capsys, change):
    _, save = copy(run, tmp_path)
    best = save / "best"
    config = json.loads((best / "config.json").read_text())
    config.update(change)
    (best / "config.json").write_text(json.dumps(config))
    t0 = time.perf_counter()
    err = one_line(capsys, "generate", "--checkpoint", best, "--seconds", "1", "--output", tmp_path / "o.mid")
    assert time.perf_counter() - t0 < 10  # 100,000 layers used to take ~25 minutes to build
    name, value = next(iter(change.items()))
    if value in (200, 4096):  # under the bounds: the weights' header says what is wrong
        assert "does not match model.safetensors" in err
    else:
        assert f"model {name}" in err and ("over the limit" in err or "positive integer" in err)
    assert not (tmp_path / "o.mid").exists()


# ------------------------------------------------------------------------------------------
# 8: damaged trainer state, config, tokenizer, metadata; NaN weights


def _state_variants():
    def top(value):
        return lambda s: value

    def field(k, v):
        def edit(s):
            s[k] = v
            return s
        return edit

    def drop(k):
        def edit(s):
            del s[k]
            return s
        return edit

    return {"list": top([]), "config_list": field("config", []), "optimizer_list": field("optimizer", [1]),
            "step_missing": drop("step"), "step_string": field("step", "3"), "step_negative": field("step", -1)}


@pytest.mark.parametrize("kind", sorted(_state_variants()) + ["rng_missing", "optimizer_shape"])
def test_damaged_trainer_state_is_one_line(run, tmp_path, capsys, kind):
    from safetensors.torch import load_file, save_file

    cache, save = copy(run, tmp_path)
    last = save / "last"
    if kind in ("rng_missing", "optimizer_shape"):
        tensors = load_file(str(last / "trainer_state.safetensors"))
        if kind == "rng_missing":
            tensors = {k: v for k, v in tensors.items() if not k.startswith("rng.")}
        else:
            k = next(k for k in tensors if k.endswith("exp_avg") and tensors[k].dim() == 2)
            tensors[k] = torch.zeros(3, 5)
        save_file(tensors, str(last / "trainer_state.safetensors"))
        why = "random-number state" if kind == "rng_missing" else "optimizer state does not fit"
    else:
        state = json.loads((last / "trainer_state.json").read_text())
        (last / "trainer_state.json").write_text(json.dumps(_state_variants()[kind](state)))
        why = {"list": "trainer_state.json", "config_list": "config", "optimizer_list": "optimizer",
               "step_missing": "has no step", "step_string": "step should be a whole number",
               "step_negative": "step should be a whole number"}[kind]
    err = one_line(capsys, *resume_args(cache, save))
    assert f"cannot resume from {last}" in err and why in err


@pytest.mark.parametrize("damage", [{"dropout": "abc"}, {"dropout": None}, {"tie_weights": "no"}])
def test_damaged_config_values_are_one_line(run, tmp_path, capsys, damage):
    _, save = copy(run, tmp_path)
    config = json.loads((save / "best" / "config.json").read_text())
    config.update(damage)
    (save / "best" / "config.json").write_text(json.dumps(config))
    err = one_line(capsys, "generate", "--checkpoint", save / "best", "--seconds", "1", "--output", tmp_path / "o.mid")
    assert f"model {next(iter(damage))} must be" in err


@pytest.mark.parametrize("text,why", [("[]", "not a JSON object"), ('{"name": "performance", "colour": 3}', "unknown key"),
                                      ('{"name": "performance", "steps_per_second": 0}', "steps_per_second must be"),
                                      ('{"name": "performance", "steps_per_second": "x"}', "steps_per_second must be"),
                                      ('{"name": "nope"}', "unknown tokenizer"), ("{", "corrupt tokenizer file")])
def test_damaged_tokenizer_json_is_one_line(run, tmp_path, capsys, text, why):
    cache, save = copy(run, tmp_path)
    (save / "best" / "tokenizer.json").write_text(text)
    err = one_line(capsys, "generate", "--checkpoint", save / "best", "--seconds", "1", "--output", tmp_path / "o.mid")
    assert "tokenizer" in err and why in err
    (cache / "tokenizer.json").write_text(text)  # the cache's, read by train
    assert why in one_line(capsys, "train", "--data", cache, "--save_dir", tmp_path / "new")


@pytest.mark.parametrize("damage", ["invalid_utf8", "huge_field"])
def test_damaged_metadata_csv_is_one_line(run, tmp_path, capsys, damage):
    corpus = tmp_path / "corpus"
    piece = write_midi(corpus / "sub" / "a.mid", scale(8))
    body = (b"path,composer\nsub/a.mid,Chopin\xff\xfe\n" if damage == "invalid_utf8"
            else b"path,composer\nsub/a.mid,\"" + b"x" * (200 * 1024) + b"\"\n")
    (corpus / "metadata.csv").write_bytes(body)
    why = "not UTF-8 text" if damage == "invalid_utf8" else "not a readable CSV table"
    err = one_line(capsys, "data", "prepare", corpus, "--out", tmp_path / "cache", "--workers", "1", "--no_progress")
    assert f"{corpus / 'metadata.csv'}" in err and why in err
    assert not (tmp_path / "cache").exists()
    err = one_line(capsys, "evaluate", corpus, "--split", "valid", "--checkpoint", run / "run" / "best", "--no_progress")
    assert why in err
    # a file given alone finds the table in a parent folder
    err = one_line(capsys, "evaluate", piece, "--conditions", "metadata", "--checkpoint", run / "run" / "best",
                   "--no_progress")
    assert why in err


def test_nan_weights_stop_training_at_the_first_step(run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    cache, save = copy(run, tmp_path)
    weights = save / "last" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors = {k: torch.full_like(v, float("nan")) if k.startswith("lstm.weight") else v for k, v in tensors.items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    best_before = (save / "best" / "model.safetensors").read_bytes()
    lines_before = (save / "metrics.jsonl").read_text()
    err = one_line(capsys, "train", "--data", cache, "--save_dir", save, "--resume", "--max_steps", "6",
                   "--log_every", "1", "--eval_every", "1", "--no_progress", "--num_workers", "0")
    assert "stopped at step 3: the training loss is nan (not finite)" in err and "broken" in err
    assert (save / "metrics.jsonl").read_text() == lines_before  # no NaN (not JSON) written
    assert (save / "best" / "model.safetensors").read_bytes() == best_before
    assert json.loads((save / "last" / "trainer_state.json").read_text())["step"] == 2
