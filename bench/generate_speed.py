"""Generation speed: carried-state sampling vs a sliding-window re-feed sampler, and audio rendering.

    python bench/generate_speed.py [--checkpoint DIR] [--events 1000]

The re-feed sampler is how notebook LSTMs usually sample: run the model over the last 100 events
for every new event. Ours feeds one event per step and carries the LSTM state, with int8 matmuls
on the CPU by default (float32 shown beside it). Both use the same model in the same run. Ours
always decodes on one thread (generate does: see generate.sampling._one_thread_on_cpu); the peer runs on
one thread (like for like) and on every core (its best). Goals (issue 4): >= 20x real time at batch 1 on 2 cores, >= 50x faster than re-feed,
rendering >= 100x real time.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from classical_music.generate import default_checkpoint, filter_logits, load_model, sample
from classical_music.decoding import int8_available


@torch.inference_mode()
def refeed_sample(model, start, n_events, window=100, batch=1, seed=0):
    """The peer: every new event re-runs the model over the last `window` events.

    It starts from a full window (`start`, 100 real events), as notebook samplers start from a
    seed sequence taken from the data; starting from one token would make its average window
    half as long and the peer twice as fast as the method it stands for."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.as_tensor(start[-window:], dtype=torch.long).unsqueeze(0).repeat(batch, 1)
    for _ in range(n_events):
        logits, _ = model(seq[:, -window:])
        nxt = torch.multinomial(filter_logits(logits[:, -1]).exp(), 1, generator=g)
        seq = torch.cat([seq, nxt], 1)
    return seq[:, -n_events:].numpy()


def music_seconds(tok, rows):
    return float(np.mean([tok.shift_steps(r).sum() / tok.steps_per_second for r in rows]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--refeed_events", type=int, default=100)
    args = ap.parse_args()
    if args.events < 100:
        ap.error("--events must be >= 100: the re-feed peer starts from the first 100 events ours made")
    ck = args.checkpoint or default_checkpoint()
    model = load_model(args.checkpoint)
    tok = model.tokenizer
    with torch.no_grad():  # never end early: both samplers must make exactly the events asked for
        model.head.bias[tok.eos_id] = float("-inf")
    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__}; "
          f"model {ck} ({model.num_parameters():,} parameters)")
    print()
    print("| sampler | batch | events | wall s | events/s (all variations) | music s per wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    rates, start = {}, None
    for int8 in ((True, False) if int8_available() else (False,)):
        for batch in (1, 8):
            kw = dict(num_samples=batch, int8=int8)
            sample(model, tok, np.array([tok.bos_id]), events=20, seed=0, **kw)  # warm-up
            walls = []
            for _ in range(3):  # a run is ~0.2 s: the median of three steadies it
                t = time.perf_counter()
                rows = sample(model, tok, np.array([tok.bos_id]), events=args.events, seed=1, **kw)
                walls.append(time.perf_counter() - t)
            wall = float(np.median(walls))
            n = sum(len(r) for r in rows)
            rtf = music_seconds(tok, rows) * batch / wall
            rates.setdefault(("ours", batch), n / wall)  # the default: int8 where available
            start = rows[0][:100] if start is None else start
            name = "int8, the default" if int8 else "float32"
            print(f"| carried state (ours, {name}) | {batch} | {n} | {wall:.2f} | {n / wall:,.0f} | {rtf:.0f}x |")
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for batch in (1, 8):
            t = time.perf_counter()
            rows = refeed_sample(model, start, args.refeed_events, batch=batch)
            wall = time.perf_counter() - t
            n = rows.size
            rates[("refeed", threads, batch)] = n / wall
            rtf = music_seconds(tok, rows) * batch / wall
            print(f"| re-feed last 100 events, {threads} thread{'s' if threads > 1 else ''} | {batch} | {n} | "
                  f"{wall:.2f} | {n / wall:,.0f} | {rtf:.1f}x |")
    print()
    for threads in sorted({1, cores}):
        print(f"speed-up over re-feed on {threads} thread{'s' if threads > 1 else ''}: " + ", ".join(
            f"batch {b} {rates[('ours', b)] / rates[('refeed', threads, b)]:.0f}x" for b in (1, 8)) + " (goal >= 50x)")

    from classical_music.audio import render
    from classical_music.generate import GenerateConfig, compose

    with tempfile.TemporaryDirectory() as d:
        mid = Path(d) / "piece.mid"
        compose(GenerateConfig(output=mid, checkpoint=args.checkpoint, seconds=60, seed=3))
        print()
        print("| render | music s | wall s | x real time |")
        print("|---|---:|---:|---:|")
        for ext in (".wav", ".mp3"):
            t = time.perf_counter()
            info = render(mid, mid.with_suffix(ext))
            wall = time.perf_counter() - t
            print(f"| {ext[1:]} ({Path(info['soundfont']).name}) | {info['seconds']:.1f} | {wall:.2f} | "
                  f"{info['seconds'] / wall:.0f}x |")


if __name__ == "__main__":
    main()
