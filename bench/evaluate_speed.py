"""Evaluation speed: batched scoring (classical-music evaluate) beside the single-file batch-1 path.

    python bench/evaluate_speed.py [--files 20] [--threads 1 2] [--busy] [--batch_size 64]

Both score the same valid files of ../shared/data/classical-piano with the shipped model in the
same run: the peer is evaluate.file_nll, one file at a time at batch 1 (what evaluate did before),
float32; ours is evaluate.evaluate, float32 and int8 (on N threads: N lanes of one thread each,
beside one batch on N OpenMP threads). Each is timed on each thread count, quiet
and, with --busy, again beside one busy process (a `while True: pass` Python on a spare core),
and nats/event of every file is compared with the peer's. Goal (issue 14): >= 10x the single-file
events/s on 2 cores, same nats/event (float32 within 1e-4, int8 within 2e-3).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from classical_music.evaluate import _read, collect, evaluate, file_nll
from classical_music.generate import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "classical-piano"


def single(model, files):
    tok = model.tokenizer
    out = {}
    for p in files:
        tokens = _read(p, tok)[0]
        out[str(p)] = (file_nll(model, tokens), len(tokens) - 1)
    return out


def batched(model, files, precision, batch_size, lanes=None):
    r = evaluate(model, files, progress=False, precision=precision, batch_size=batch_size, lanes=lanes)
    return {f["path"]: (f["nats_per_event"] * f["events"], f["events"]) for f in r["per_file"]}


def load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--batch_size", type=int, default=None)
    ap.add_argument("--busy", action="store_true", help="also measure beside one busy process")
    ap.add_argument("--data", type=Path, default=SHARED)
    args = ap.parse_args()
    if not (args.data / "metadata.csv").exists():
        sys.exit(f"no corpus at {args.data}")
    files = collect([args.data], "valid")[: args.files]
    model = load_model(None, "cpu")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or '?'}), "
          f"torch {torch.__version__}, {len(files)} valid files, load average at start {load()}\n")
    print("| path | precision | threads | machine | events | wall s | events/s | x single | "
          "max file diff (nats/event) | total diff |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for busy in ([False, True] if args.busy else [False]):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads in args.threads:
                torch.set_num_threads(threads)
                runs = [("single file, batch 1", "float32", lambda: single(model, files)),
                        ("batched (ours)", "float32", lambda: batched(model, files, "float32", args.batch_size)),
                        ("batched (ours)", "int8", lambda: batched(model, files, "int8", args.batch_size))]
                if threads > 1:  # the lanes' peer: one batch on all the OpenMP threads (as before lanes)
                    runs.append(("batched, one lane", "int8", lambda: batched(model, files, "int8", args.batch_size, 1)))
                ref = base = None
                for name, precision, f in runs:
                    t = time.perf_counter()
                    got = f()
                    wall = time.perf_counter() - t
                    events = sum(v[1] for v in got.values())
                    rate = events / wall
                    if ref is None:
                        ref, base = got, rate
                    npe = {k: v[0] / v[1] for k, v in got.items()}
                    diff = max(abs(npe[k] - ref[k][0] / ref[k][1]) for k in ref)
                    total = sum(v[0] for v in got.values()) / events - sum(v[0] for v in ref.values()) / events
                    print(f"| {name} | {precision} | {threads} | {'one busy process' if busy else 'no extra load'} "
                          f"(load {load()}) | {events:,} | {wall:.1f} | {rate:,.0f} | {rate / base:.1f}x | "
                          f"{diff:.1e} | {total:+.1e} |", flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
