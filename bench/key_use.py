"""Holding a key: do pieces asked for a key stay in it, and sound as real music in that key does?

    OMP_NUM_THREADS=1 python bench/key_use.py [--corpus ../shared/data/classical-piano] [--seeds 7,11,23]

1. How real music uses a key (conditions.key_use): the share of key-downs on each pitch class above
   the tonic of the 16 s around it (key_codes), over the corpus's train split, beside the numbers the
   package holds; and the valid split's own use, the reference for 2.
2. Pieces of 30 s from the shipped model asked for a key (bench/control.py's six keys, --pieces
   each, --steer 1, at each seed) held four ways, in the same run:
     none          the key condition alone, no bonus
     Krumhansl     a fixed bonus: the key's probe-tone profile as z-scores x 0.75 (before KeyHold)
     key use       a fixed bonus: the log of the key's use, centred (KeyHold's lean alone)
     KeyHold       ours: feedback on the recent notes' use against the key's, plus that lean
   -> the share whose Krumhansl-Schmuckler key is the one asked (or its relative), the tonic's share
   of their notes, and how alike their use of the key is to real music's (the overlap of the two
   12-bin distributions, major and minor averaged; 1 = the same).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from classical_music import conditions as C  # noqa: E402
from classical_music.compare import load_notes  # noqa: E402
from classical_music.conditions.events import Onsets  # noqa: E402
from classical_music.generate import load_model  # noqa: E402
from classical_music.generate import sampling as S  # noqa: E402
from classical_music.notes import MidiReadError  # noqa: E402
from control import KEYS, compose, corpus_files  # noqa: E402


def corpus_use(files) -> np.ndarray:
    """[2, 12]: major and minor key use of these files (each key-down against its 16-s key)."""
    use = np.zeros((2, 12))
    for path in files:
        try:
            n = load_notes(path)
        except MidiReadError:
            continue
        if not len(n):
            continue
        sec = np.floor(n.onset - n.onset.min()).astype(np.int64)
        key = C.key_codes(Onsets(int(sec.max()) + 1, sec, n.pitch, C.note_durations(n)))[sec] - 1
        ok = key >= 0
        np.add.at(use, ((key[ok] >= 12).astype(int), (n.pitch[ok] - key[ok] % 12) % 12), 1)
    return use / use.sum(1, keepdims=True)


def alike(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.minimum(a[m], b[m]).sum() for m in (0, 1)]))


class FixedHold(S.KeyHold):
    """A peer: the same hook with a fixed bonus (no feedback)."""

    def __init__(self, rows, profile):
        super().__init__(rows)
        self.profile = profile

    def _refresh(self, row):
        k, s = self.key[row], self.strength[row]
        self.bonus[row] = S.registered(s * self.profile(k)[np.arange(128) % 12]) if k is not None and s else 0.0


def krumhansl(key):
    return 0.75 * C.PROFILES[key] * math.sqrt(12)


def log_use(key):
    u = np.log(C.key_use(key))
    return S.KEY_HOLD_LEAN * (u - u.mean())


def held(model, hold, pieces, seeds) -> dict:
    """hold: what Steering holds the key with (None: no steering, the key condition alone)."""
    real, S.KeyHold = S.KeyHold, hold or S.KeyHold
    exact = relative = 0
    use = np.zeros((2, 12))
    t = time.time()
    for seed in seeds:
        for k in KEYS:
            want = C.parse_key(k)
            for p in compose(model, pieces, {"key": k}, seed=seed, steer=0.0 if hold is None else 1.0):
                e = C.estimate_key(p.pitch, C.note_durations(p))
                exact += e == want
                relative += e in (want, C.relative_key(want))
                np.add.at(use[int(want >= 12)], (p.pitch - want % 12) % 12, 1)
    S.KeyHold = real
    n = pieces * len(KEYS) * len(seeds)
    use /= use.sum(1, keepdims=True)
    return {"exact": exact / n, "relative": relative / n, "tonic": use[:, 0], "use": use, "seconds": time.time() - t}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "classical-piano")
    ap.add_argument("--pieces", type=int, default=8, help="per key and seed")
    ap.add_argument("--seeds", default="7,11,23")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files = corpus_files(args.corpus)
    train = corpus_use([f[0] for f in files if f[1] == "train"])
    valid = corpus_use([f[0] for f in files if f[1] == "valid"])
    held_now = np.array([C.key_use(0), C.key_use(12)])
    print("## 1. How real music uses a key (share of notes, pitch classes above the tonic)\n")
    print("| | " + " | ".join(str(i) for i in range(12)) + " |")
    print("|---" * 13 + "|")
    for name, u in (("train major", train[0]), ("train minor", train[1]), ("package major", held_now[0]),
                    ("package minor", held_now[1]), ("valid major", valid[0]), ("valid minor", valid[1])):
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in u) + " |")
    print(f"\nvalid against train: {alike(valid, train):.3f} alike\n")

    model = load_model(None)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [("none (the key condition alone)", None),
            ("Krumhansl, fixed (before)", lambda r: FixedHold(r, krumhansl)),
            ("key use, fixed (KeyHold's lean alone)", lambda r: FixedHold(r, log_use)),
            ("**KeyHold** (feedback + lean)", S.KeyHold)]
    print(f"## 2. {args.pieces} pieces x {len(KEYS)} keys x seeds {args.seeds}, 30 s, --steer 1, shipped model\n")
    print("| held by | key asked | or its relative | tonic's share (major / minor) | use alike real (valid) | s |")
    print("|---|---|---|---|---|---|")
    for name, hold in rows:
        r = held(model, hold, args.pieces, seeds)
        print(f"| {name} | {r['exact']:.0%} | {r['relative']:.0%} | {r['tonic'][0]:.3f} / {r['tonic'][1]:.3f} | "
              f"{alike(r['use'], valid):.3f} | {r['seconds']:.0f} |", flush=True)
    print(f"\n(real valid music's tonic share: {valid[0, 0]:.3f} / {valid[1, 0]:.3f})")


if __name__ == "__main__":
    main()
