"""Preparation speed: our tokenizer pipeline vs MidiTok's MIDILike encoder vs symusic parse-only.

    python bench/prepare.py [--corpus ../shared/data/classical-piano] [--files 300]

All three run on the same files, one process each (per-worker speed), in this run; then the full
corpus is prepared with every core, as a user would. Goals (issue 2): >= 20x MidiTok's files/s
and >= 25 % of parse-only per worker.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import symusic

from classical_music.data.prepare import PrepareConfig, _init_worker, encode_file, prepare
from classical_music.data.sources import walk_midi


def timed(fn, files):
    t = time.perf_counter()
    for f in files:
        fn(f)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--corpus", type=Path, default=here.parent / "shared" / "data" / "classical-piano")
    ap.add_argument("--files", type=int, default=300)
    args = ap.parse_args()
    files = [str(p) for p in walk_midi(args.corpus)]
    step = max(1, len(files) // args.files)
    sample = files[::step][: args.files]

    from miditok import MIDILike, TokenizerConfig

    midilike = MIDILike(TokenizerConfig(use_sustain_pedals=True, num_velocities=32))
    _init_worker("performance", {})
    for f in sample[:5]:  # warm caches and imports for everyone
        encode_file(f), midilike.encode(symusic.Score(f)), symusic.Score(f, ttype="second")

    rows = []
    t_parse = timed(lambda f: symusic.Score(f, ttype="second"), sample)
    t_ours = timed(encode_file, sample)
    t_mt = timed(lambda f: midilike.encode(symusic.Score(f)), sample)
    n = len(sample)
    rows.append(("symusic parse only (floor)", n, t_parse))
    rows.append(("classical-music performance (1 worker)", n, t_ours))
    rows.append(("MidiTok MIDILike encode (1 worker)", n, t_mt))

    out = Path(tempfile.mkdtemp())
    try:
        workers = os.cpu_count() or 1
        t = time.perf_counter()
        r = prepare(PrepareConfig(source=args.corpus, out=out / "c", workers=workers, progress=False))
        t_full = time.perf_counter() - t
        rows.append((f"classical-music data prepare, whole corpus ({workers} workers)", r["prepared"], t_full))
    finally:
        shutil.rmtree(out)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, corpus {args.corpus.name}")
    print()
    print("| pipeline | files | seconds | files/s |")
    print("|---|---:|---:|---:|")
    for name, k, s in rows:
        print(f"| {name} | {k} | {s:.2f} | {k / s:,.0f} |")
    print()
    print(f"ours vs MidiTok: {t_mt / t_ours:.1f}x (goal >= 20x); ours vs parse-only per worker: "
          f"{100 * t_parse / t_ours:.0f} % (goal >= 25 %); whole corpus: {r['events']:,} events")


if __name__ == "__main__":
    main()
