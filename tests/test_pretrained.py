"""The model shipped in the package: loads from safetensors, fits the size budget, and scores the
shared valid split exactly as its evaluation.json (and MODEL_CARD.md) report."""

import json
from pathlib import Path

import pytest

from classical_music.evaluate import evaluate
from classical_music.generate import default_checkpoint, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "classical-piano"
DEFAULT = default_checkpoint()


def test_shipped_model_is_small_half_precision_safetensors():
    weights = DEFAULT / "model.safetensors"
    assert weights.stat().st_size <= 25 * 2**20
    assert not list(DEFAULT.glob("*.bin")) and not list(DEFAULT.glob("*.pt"))
    config = json.loads((DEFAULT / "config.json").read_text())
    assert config["torch_dtype"] == "float16"
    model = load_model(None)
    assert sum(p.numel() for p in model.parameters()) == config["num_parameters"]
    assert model.tokenizer.name == "performance" and model.tokenizer.vocab_size == config["vocab_size"]


def test_shipped_model_matches_its_reported_validation_score():
    report = json.loads((DEFAULT / "evaluation.json").read_text())
    assert report["split"] == "valid" and report["files"] >= 50
    assert report["perplexity"] == pytest.approx(2.718281828 ** report["nats_per_event"], rel=1e-3)
    if not SHARED.is_dir():
        pytest.skip("../shared/data/classical-piano is not here")
    # re-score the two shortest valid files: same per-file nats/event as reported
    per_file = sorted(report["per_file"], key=lambda r: r["events"])[:2]
    files = [SHARED / r["path"].split("classical-piano/", 1)[1] for r in per_file]
    model = load_model(None)
    for f, r in zip(files, per_file):
        got = evaluate(model, [f], progress=False)
        assert got["events"] == r["events"]
        assert got["nats_per_event"] == pytest.approx(r["nats_per_event"], abs=1e-3)
