"""The model card's numbers block, written by recipes/export_default_model.py."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "export_default_model.py"


def _export():
    spec = importlib.util.spec_from_file_location("export_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = {"embed_size": 16, "num_layers": 2, "hidden_size": 32, "dropout": 0.1, "vocab_size": 388, "num_parameters": 1000}
RESULT = {"nats_per_event": 2.5, "perplexity": 12.2, "nats_per_note": 9.0, "bits_per_second": 150.0, "files": 3,
          "events": 3000, "seconds": 3600.0}


def test_two_stages_at_different_sizes_are_counted_each_at_its_own():
    E = _export()
    info = {"trained_steps": 1100, "recipe_config": {"batch_size": 64, "seq_len": 128}, "train_seconds": 60,
            "hardware": "a CPU", "window_val_nats_per_event": 2.6,
            "stages": [{"trained_steps": 1000, "batch_size": 256, "seq_len": 256},
                       {"trained_steps": 100, "batch_size": 64, "seq_len": 128}]}
    line = next(x for x in E.card_numbers(CONFIG, info, RESULT, 1.0).splitlines() if x.startswith("| training |"))
    assert "stage 1: 1,000 steps × 256 windows × 256 events = 65.5 M events" in line
    assert "stage 2: 100 steps × 64 windows × 128 events = 0.8 M events" in line
    assert "1,100 steps × 64" not in line  # the old block multiplied all steps by the last stage's sizes
    del info["stages"]
    line = next(x for x in E.card_numbers(CONFIG, info, RESULT, 1.0).splitlines() if x.startswith("| training |"))
    assert "1,100 steps × 64 windows × 128 events = 9 M events" in line
