"""Likelihood: how well a model predicts real music it has not seen.

    classical-music evaluate ../shared/data/classical-piano --split valid --json valid.json

Each file is tokenized as in preparation and every event after BOS (EOS included) is scored with
the model, carrying the LSTM state across the whole file in chunks (never reset mid-file), so
the numbers are the model's true sequence likelihood, not a windowed estimate.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .errors import UserError
from .files import write_json
from .notes import MidiReadError, has_drums_only, load_score, score_to_notes

CHUNK = 2048


@torch.inference_mode()
def file_nll(model, tokens: np.ndarray, device="cpu", chunk: int = CHUNK) -> float:
    """Total nats of tokens[1:] given their past, state carried across chunks."""
    x = torch.as_tensor(tokens.astype(np.int64), device=device).unsqueeze(0)
    total, state = 0.0, None
    for s in range(0, x.shape[1] - 1, chunk):
        inp = x[:, s: s + chunk]
        tgt = x[:, s + 1: s + chunk + 1]
        inp = inp[:, : tgt.shape[1]]
        logits, state = model(inp, state)
        total += torch.nn.functional.cross_entropy(logits[0].float(), tgt[0], reduction="sum").item()
    return total


def collect(paths, split: str | None = None) -> list[Path]:
    """Files from files and folders; with split, a folder's metadata.csv picks that split's files."""
    from .data.sources import iter_folder, walk_midi

    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"no such file or folder: {p}")
        if p.is_dir() and split:
            out += [sf.path for sf in iter_folder(p) if (sf.split or "train") == split]
        else:
            out += list(walk_midi(p))
    return out


def evaluate(model, files, device="cpu", progress=True) -> dict:
    tok = model.tokenizer
    nats = events = notes = 0
    seconds = 0.0
    skipped, per_file = [], []
    for path in tqdm(files, unit="file", desc="evaluate", disable=not progress or len(files) < 2):
        try:
            score = load_score(path)
            ns = score_to_notes(score)
            if len(ns) == 0:
                raise MidiReadError("drum tracks only" if has_drums_only(score) else "no notes")
            if not ns.seconds > 0:  # bits per second would divide by zero
                raise MidiReadError("its music lasts 0 s: every note at one instant, a tempo of 0?")
        except MidiReadError as e:
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        tokens = tok.encode_notes(ns)
        n = file_nll(model, tokens, device)
        nats += n
        events += len(tokens) - 1
        notes += len(ns)
        seconds += ns.seconds
        per_file.append({"path": str(path), "events": len(tokens) - 1, "nats_per_event": round(n / (len(tokens) - 1), 5)})
    if not events:
        raise UserError(f"no usable MIDI file among {len(files)} given" + (f" ({skipped[0]['reason']})" if skipped else ""))
    npe = nats / events
    return {
        "files": len(per_file),
        "skipped": skipped,
        "events": events,
        "notes": notes,
        "seconds": round(seconds, 3),
        "nats_per_event": round(npe, 5),
        "nats_per_note": round(nats / notes, 5),
        "bits_per_second": round(nats / math.log(2) / seconds, 3) if seconds else None,
        "perplexity": round(math.exp(npe), 4),
        "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size, **tok.resolution()},
        "per_file": per_file,
    }


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score MIDI files with a model: nats/event, perplexity, bits/second",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS", help="MIDI files and folders")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (default: the shipped model)")
    p.add_argument("--split", default=None, help="with a folder holding metadata.csv: only files of this split")
    p.add_argument("--json", type=Path, default=None, help="write the full result as JSON here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .generate import load_model

    files = collect(args.paths, args.split)
    if not files:
        raise UserError("no MIDI files found in " + ", ".join(map(str, args.paths)))
    if args.json:
        folder = args.json.parent if str(args.json.parent) else Path(".")
        if not folder.is_dir():
            raise UserError(f"cannot write {args.json}: folder {folder} does not exist")
    model = load_model(args.checkpoint, args.device)
    r = evaluate(model, files, args.device, progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        write_json(args.json, r)
    print(f"{r['files']} files ({len(r['skipped'])} skipped), {r['events']:,} events, {r['seconds'] / 60:.1f} min: "
          f"{r['nats_per_event']:.4f} nats/event, perplexity {r['perplexity']:.2f}, "
          f"{r['nats_per_note']:.3f} nats/note, " +
          ("bits/s n/a (0 s of music)" if r["bits_per_second"] is None else f"{r['bits_per_second']:.1f} bits/s"))
    return 0
