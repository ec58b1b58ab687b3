"""Compose the README's sample pieces with the model shipped in the package.

    python recipes/make_samples.py [--out docs/samples]

Writes OUT/<name>.mid, .mp3 and .png: two pieces from scratch at temperatures 0.9 and 1.0, one
continuing the opening of Chopin's Prelude Op. 28 No. 1 (piano-midi.de, valid split: the model
never trained on it), three asked for a style (composer; composer, key and density), all 30 s and
composed through as before forms existed (--form through --ending none, so they stay the files
they were), and two whole pieces with a form (their .plan.json too): ABA over 120 s, AABA over 96 s.

What is reproducible: the MIDI files, on any CPU. The pieces are decoded with float32 weights
(--precision float32), not with the int8 kernels `generate` uses on a CPU by default: those
kernels differ between CPU families (AVX2, AVX512-VNNI, AMX) and so do the notes they pick from
a seed. Float32 kernels differ too, but only in the last bits of a logit, which moves a draw only
when it falls within ~1e-7 of a boundary between two events. Checked: with PyTorch, oneDNN and
MKL held to SSE4.1 code (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41
MKL_ENABLE_INSTRUCTIONS=SSE4_2 MKL_CBWR=COMPATIBLE) instead of AVX2, the logits differed in their
last bits (-11.314907 vs -11.314909) and all three MIDI files came out byte-identical. Not
guaranteed on every CPU, but a flip needs a draw that close. The MP3 and PNG follow from the MIDI
(same instrument and libraries): the MP3s are played by the Salamander grand, which must be
installed (`classical-music piano install`), in the default hall. `--render_only` re-renders the
MP3s from the MIDI files already in OUT (a new instrument or room, the same notes). `--midi_only` writes just the MIDI, to compare quickly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classical_music import piano  # noqa: E402
from classical_music.generate import GenerateConfig, compose  # noqa: E402

OUT = ROOT / "docs" / "samples"
PRIMER = ROOT.parent / "shared" / "data" / "classical-piano" / "piano-midi" / "Chopin" / "chpn-p1.mid"
PRECISION = "float32"  # the same notes on every CPU (see above)
THROUGH = dict(seconds=30, form="through", ending="none")
SAMPLES = [
    ("temperature-0.9", dict(temperature=0.9, seed=11)),
    ("temperature-1.0", dict(temperature=1.0, seed=12)),
    ("chopin-prelude-continued", dict(temperature=0.9, seed=13, primer=PRIMER, primer_seconds=8.0)),
    # style control: the same seed asked for two composers, then a composer, key and density
    ("style-bach", dict(temperature=0.95, seed=16, composer="bach")),
    ("style-chopin", dict(temperature=0.95, seed=16, composer="chopin")),
    ("style-liszt-d-minor-12", dict(temperature=0.95, seed=15, composer="liszt", key="D minor", density=12)),
]
SAMPLES = [(name, {**THROUGH, **kw}) for name, kw in SAMPLES] + [
    # whole pieces: sections, a theme that returns, cadences and a final tonic (issue 23)
    ("form-aba-g-major", dict(temperature=0.95, seed=21, seconds=120, form="ABA", key="G major")),
    ("form-aaba-c-minor", dict(temperature=0.95, seed=22, seconds=96, form="AABA", key="C minor")),
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Compose the README's sample pieces.")
    p.add_argument("--out", type=Path, default=OUT, help=f"folder to write them to (default {OUT})")
    p.add_argument("--midi_only", action="store_true", help="only the MIDI files (to check them quickly)")
    p.add_argument("--only", default=None, help="comma-separated names: compose just these (e.g. form-aba-g-major)")
    p.add_argument("--render_only", action="store_true", help="only re-render OUT/<name>.mp3 from OUT/<name>.mid")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    audio = not args.midi_only
    grand = None
    if audio:
        grand, problem = piano.installed()
        if grand is None:  # the shipped samples are the grand's: never re-render them with TimGM6mb
            sys.exit(f"make_samples.py: {problem}")
    if args.render_only:
        from classical_music.audio import render

        for name, _ in SAMPLES:
            info = render(args.out / f"{name}.mid", args.out / f"{name}.mp3", piano=grand)
            print(f"{name}: {info['seconds']:.1f} s, {info['loudness_lufs']:.1f} LUFS, peak {info['peak_dbfs']:.1f} dBFS")
        return
    for name, kw in SAMPLES:
        if args.only and name not in args.only.split(","):
            continue
        r = compose(GenerateConfig(output=args.out / f"{name}.mid", mp3=audio, plot=audio,
                                   precision=PRECISION, piano=grand, **kw))[0]
        print(f"{name}: {r['notes']} notes, {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
