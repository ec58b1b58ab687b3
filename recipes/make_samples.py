"""Compose the README's sample pieces with the model shipped in the package.

    python recipes/make_samples.py

Writes docs/samples/<name>.mid, .mp3 and .png: two pieces from scratch at temperatures 0.9 and
1.0, and one continuing the opening of Chopin's Prelude Op. 28 No. 1 (piano-midi.de, valid split:
the model never trained on it). Fixed seeds, so the files can be made again.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classical_music.generate import GenerateConfig, compose  # noqa: E402

OUT = ROOT / "docs" / "samples"
PRIMER = ROOT.parent / "shared" / "data" / "classical-piano" / "piano-midi" / "Chopin" / "chpn-p1.mid"
SAMPLES = [
    ("temperature-0.9", dict(temperature=0.9, seed=11)),
    ("temperature-1.0", dict(temperature=1.0, seed=12)),
    ("chopin-prelude-continued", dict(temperature=0.9, seed=13, primer=PRIMER, primer_seconds=8.0)),
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, kw in SAMPLES:
        r = compose(GenerateConfig(output=OUT / f"{name}.mid", seconds=30, mp3=True, plot=True, **kw))[0]
        print(f"{name}: {r['notes']} notes, {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
