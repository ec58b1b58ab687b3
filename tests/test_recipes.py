"""recipes/make_samples.py decodes the README's samples in float32: int8 kernels pick other
notes on other CPU families, so int8 samples could not be made again elsewhere."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_samples_decodes_in_float32(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "recipes" / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seen = []
    monkeypatch.setattr(mod, "compose", lambda cfg: seen.append(cfg) or [{"notes": 1, "seconds": 30.0}])
    mod.main(["--out", str(tmp_path), "--midi_only"])
    assert [c.seed for c in seen] == [11, 12, 13, 16, 16, 15]  # the shipped samples' seeds
    assert [c.composer for c in seen[3:]] == ["bach", "chopin", "liszt"] and seen[5].key == "D minor"
    assert all(c.precision == "float32" and not c.mp3 and c.output.parent == tmp_path for c in seen)
