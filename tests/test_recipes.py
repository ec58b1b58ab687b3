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
    assert [c.seed for c in seen] == [11, 12, 13, 16, 16, 15, 21, 22]  # the shipped samples' seeds
    # the six from before forms stay as they were; two whole pieces of 90-120 s have a form
    assert all(c.form == "through" and c.ending == "none" and c.seconds == 30 for c in seen[:6])
    assert [c.form for c in seen[6:]] == ["ABA", "AABA"] and all(90 <= c.seconds <= 120 for c in seen[6:])
    assert [c.composer for c in seen[3:6]] == ["bach", "chopin", "liszt"] and seen[5].key == "D minor"
    assert all(c.precision == "float32" and not c.mp3 and c.output.parent == tmp_path for c in seen)


def _module():
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "recipes" / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_samples_plays_the_grand_or_refuses(tmp_path, monkeypatch):
    import pytest

    from classical_music import audio, piano

    mod = _module()
    with pytest.raises(SystemExit, match="not installed"):  # never the shipped samples with TimGM6mb
        mod.main(["--out", str(tmp_path), "--render_only"])
    grand = tmp_path / "salamander.sfz"
    monkeypatch.setattr(piano, "installed", lambda: (grand, ""))
    played = []
    monkeypatch.setattr(audio, "render", lambda mid, out, piano=None: played.append((mid.name, out.name, piano))
                        or {"seconds": 30.0, "loudness_lufs": -16.0, "peak_dbfs": -1.1})
    mod.main(["--out", str(tmp_path), "--render_only"])
    assert [p[:2] for p in played] == [(f"{n}.mid", f"{n}.mp3") for n, _ in mod.SAMPLES]
    assert all(p[2] == grand for p in played)
