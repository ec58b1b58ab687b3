"""Training speed and memory on CPU: the real pipeline against a bare LSTM of the same shape.

    python bench/train_speed.py [--corpus ../shared/data/classical-piano] [--files 24]
                                [--batch_size 16] [--seq_len 256] [--steps 3] [--rounds 2] [--threads N]

1. Builds a token cache from --files MIDI files of the corpus with `data prepare` (synthetic
   MIDI when the corpus is absent), and one from 4x as many files.
2. Tokens/s of `classical_music.train` (default model size: embed 256, hidden 512, 3 layers;
   data loader, augmentation, AdamW, clipping, logging) against a bare nn.Embedding + nn.LSTM +
   nn.Linear forward/backward on random tokens of the same [batch, seq_len], alternating in
   the same process, best round of each (other load on the machine only ever slows a round).
   Goal: pipeline >= 0.9 x bare.
3. Peak RSS of a fresh process that trains two steps and then draws every training window of
   the cache once, for the small and the 4x cache. Goal: flat (the cache is memory-mapped).

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = dict(embed_size=256, hidden_size=512, num_layers=3, dropout=0.2)


def midi_subset(corpus: Path, n: int, out: Path) -> Path:
    """A folder of links to n files spread over the corpus, or n synthetic pieces without it."""
    out.mkdir(parents=True)
    if corpus.is_dir():
        from classical_music.data.sources import walk_midi

        files = list(walk_midi(corpus))
        for i, f in enumerate(files[:: max(1, len(files) // n)][:n]):
            os.symlink(f.resolve(), out / f"{i:04d}{f.suffix}")
        return out
    from classical_music.notes import Notes, notes_to_score

    rng = np.random.default_rng(0)
    for i in range(n):
        k = 3000  # about a performance's worth of notes
        onset = np.cumsum(rng.exponential(0.12, k))
        notes = Notes(onset, onset + rng.uniform(0.05, 0.8, k), rng.integers(36, 96, k).astype(np.int16),
                      rng.integers(30, 110, k).astype(np.int16))
        notes_to_score(notes).dump_midi(str(out / f"{i:04d}.mid"))
    return out


def build_cache(corpus: Path, n: int, root: Path) -> Path:
    from classical_music.data.prepare import PrepareConfig, prepare

    src = midi_subset(corpus, n, root / f"midi{n}")
    out = root / f"cache{n}"
    prepare(PrepareConfig(source=src, out=out, workers=os.cpu_count() or 1, valid_fraction=0.2, progress=False))
    return out


def bare_tokens_per_second(vocab: int, batch: int, seq_len: int, steps: int) -> float:
    torch.manual_seed(0)
    c = DEFAULT_MODEL
    emb = nn.Embedding(vocab, c["embed_size"])
    lstm = nn.LSTM(c["embed_size"], c["hidden_size"], c["num_layers"], dropout=c["dropout"], batch_first=True)
    head = nn.Linear(c["hidden_size"], vocab)
    x = torch.randint(0, vocab, (batch, seq_len))
    y = torch.randint(0, vocab, (batch, seq_len))
    times = []
    for _ in range(steps + 1):  # the first step warms allocators up
        t = time.perf_counter()
        out, _ = lstm(emb(x))
        F.cross_entropy(head(out).flatten(0, 1), y.flatten()).backward()
        times.append(time.perf_counter() - t)
    return batch * seq_len * steps / sum(times[1:])


def pipeline_tokens_per_second(cache: Path, batch: int, seq_len: int, steps: int, work: Path) -> float:
    from classical_music.train import TrainConfig, train

    save = Path(tempfile.mkdtemp(dir=work))
    cfg = TrainConfig(data=str(cache), save_dir=str(save), seq_len=seq_len, batch_size=batch,
                      max_steps=steps + 1, log_every=1, eval_every=0, eval_batches=1, save_every=10**6,
                      num_workers=1, no_progress=True, **DEFAULT_MODEL)
    train(cfg)
    recs = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    # one record per step, the first (warm-up) dropped; its seconds exclude evaluation and saving
    tokens = np.diff([r["tokens_seen"] for r in recs])
    seconds = sum(t / r["tokens_per_second"] for t, r in zip(tokens, recs[1:]))
    return float(tokens.sum() / seconds)


def rss_child(cache: str, batch: int, seq_len: int, work: str) -> None:
    """Train two steps, then draw every training window once; print peak RSS and corpus size."""
    from torch.utils.data import DataLoader

    from classical_music.train import Trainer, TrainConfig

    cfg = TrainConfig(data=cache, save_dir=tempfile.mkdtemp(dir=work), seq_len=seq_len, batch_size=batch,
                      max_steps=2, eval_every=0, eval_batches=1, save_every=10**6, num_workers=0,
                      no_progress=True, **DEFAULT_MODEL)
    t = Trainer(cfg)
    t.fit()
    for _ in DataLoader(t.train_ds, batch_size=batch, num_workers=0):
        pass
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "events": t.train_ds.num_tokens + t.valid_ds.num_tokens, "windows": len(t.train_ds)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=HERE.parent / "shared" / "data" / "classical-piano")
    ap.add_argument("--files", type=int, default=24, help="files in the small cache (the large has 4x)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--seq_len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch threads (1 on a busy machine: OpenMP threads stall when cores are shared)")
    ap.add_argument("--rss_child", nargs=2, metavar=("CACHE", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args.rss_child[0], args.batch_size, args.seq_len, args.rss_child[1])

    work = Path(tempfile.mkdtemp(prefix="train_speed-"))
    small = build_cache(args.corpus, args.files, work)
    large = build_cache(args.corpus, 4 * args.files, work)
    from classical_music.tokenizer import load_tokenizer

    vocab = load_tokenizer(small).vocab_size

    bare, ours = [], []
    for _ in range(args.rounds):
        bare.append(bare_tokens_per_second(vocab, args.batch_size, args.seq_len, args.steps))
        ours.append(pipeline_tokens_per_second(small, args.batch_size, args.seq_len, args.steps, work))

    rss = {}
    for name, cache in (("small", small), ("4x", large)):
        cmd = [sys.executable, __file__, "--rss_child", str(cache), str(work), "--threads", str(args.threads),
               "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rss[name] = json.loads(out.strip().splitlines()[-1])

    shape = f"batch {args.batch_size} x {args.seq_len}, embed 256, hidden 512, 3 layers, vocab {vocab}"
    print(f"\nCPU training, {shape}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| measurement | value | goal |")
    print("|---|---|---|")
    print(f"| bare nn.LSTM fwd+bwd, random tokens (best of {args.rounds}) | {max(bare):,.0f} tokens/s | |")
    print(f"| classical-music train pipeline (best of {args.rounds}) | {max(ours):,.0f} tokens/s | |")
    print(f"| pipeline / bare | {max(ours) / max(bare):.2f} | >= 0.90 |")
    for name in ("small", "4x"):
        r = rss[name]
        print(f"| peak RSS, {name} cache ({r['events']:,} events, {r['windows']:,} windows) | "
              f"{r['rss_mb']:,.0f} MB | flat |")
    print(f"| RSS 4x / small | {rss['4x']['rss_mb'] / rss['small']['rss_mb']:.2f} | ~1.0 |")
    print(f"\nrounds (tokens/s): bare {[round(b) for b in bare]}, pipeline {[round(o) for o in ours]}")


if __name__ == "__main__":
    main()
