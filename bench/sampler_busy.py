"""Does the sampler lose notes on a busy machine? Renders one held note (0.5 s, the test
instrument of tests/test_sampler.py) through a fresh synth RUNS times beside BUSY CPU-bound
processes and counts the renders in which it fell silent before its key-up, with the sampler as
it is and with its streaming wait turned off (SETTLE = (0, 0): the peer, the code before).

    python bench/sampler_busy.py [--runs 20] [--busy 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(HERE / "src"), str(HERE / "tests")]


def _spin() -> None:
    while True:
        pass


def silent_renders(runs: int, settle) -> int:
    import test_sampler as t

    from classical_music.audio import sampler

    sampler.SETTLE = settle
    silent = 0
    for _ in range(runs):
        d = Path(tempfile.mkdtemp(prefix="busy-"))
        sfz = t.make_tiny_piano(d / "tiny")
        sampler.POOL.idle.clear()  # a fresh synth each time: its samples not yet streamed in
        _, x = t.play(d, sfz, [(69, 0.0, 0.5, 80)], name="dry")
        silent += t.level(x, 0.4, 0.5) < -60  # the note sounds at -20 dB until its key-up
    return silent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--busy", type=int, default=3)
    args = ap.parse_args()
    from classical_music.audio import sampler

    ours = sampler.SETTLE
    busy = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        rows = [("sampler (waits for the streamed samples)", silent_renders(args.runs, ours)),
                ("peer: no wait (before)", silent_renders(args.runs, (0, 0.0)))]
    finally:
        for p in busy:
            p.terminate()
    print(f"{os.cpu_count()} cores, {args.busy} busy processes beside, {args.runs} renders each\n")
    print("| sampler | renders with the held note silent before its key-up |")
    print("|---|---|")
    for name, n in rows:
        print(f"| {name} | {n} of {args.runs} |")


if __name__ == "__main__":
    main()
