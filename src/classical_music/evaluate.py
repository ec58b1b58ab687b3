"""Likelihood: how well a model predicts real music it has not seen.

    classical-music evaluate ../shared/data/classical-piano --split valid --json valid.json

Each file is tokenized as in preparation and every event after BOS (EOS included) is scored with
the model, carrying the LSTM state across the whole file in chunks (never reset mid-file), so
the numbers are the model's true sequence likelihood, not a windowed estimate. Files are scored
side by side, one per batch row (scoring.py): the same numbers as one at a time, many times faster.
"""

from __future__ import annotations

import difflib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import conditions, memory, scoring, threads
from .errors import UserError
from .files import output_folder, writable_folder, write_json
from .memory import key_downs
from .notes import MidiReadError, has_drums_only, load_score, score_to_notes

CHUNK = 2048


# Tokens kept from the first pass (uint16: 32 MB): 20 files re-read took 5 % of an int8 evaluation.
KEEP_EVENTS = 16_000_000
SHOW_SKIPPED = 5
PROGRESS_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal  # skipped files named on the terminal; --json lists them all


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
            files = list(iter_folder(p))
            if not any(sf.split for sf in files):  # else a typo or a folder without splits read "no MIDI files"
                raise UserError(f"--split {split}: {p} has no metadata.csv giving splits (a `path` and a `split` "
                                f"column) for its {len(files):,} MIDI files; leave --split out to score them all")
            named = sorted({sf.split or "train" for sf in files})
            if split not in named:
                near = difflib.get_close_matches(split, named, n=1, cutoff=0.5)
                raise UserError(f"--split {split}: no such split in {p / 'metadata.csv'}"
                                + (f" (did you mean {near[0]}?)" if near else "") + f"; it has {', '.join(named)}")
            out += [sf.path for sf in files if (sf.split or "train") == split]
        else:
            out += list(walk_midi(p))
    return out


class Lines:
    """Progress for a log file or pipe (a tqdm bar there is one endless line): a line every
    `every` seconds on stderr, with the rate and the time left. update(n) and close() as tqdm's."""

    def __init__(self, total: int, unit: str, desc: str, every: float | None = None):
        self.total, self.unit, self.desc, self.n = total, unit, desc, 0
        self.every = PROGRESS_EVERY if every is None else every
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            print(f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}s ({100 * self.n / max(self.total, 1):.0f} %), "
                  f"{rate:,.0f} {self.unit}s/s, about {left:.0f} s left", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bar(total: int, unit: str, desc: str, progress, **kw):
    """progress True: a tqdm bar (a terminal); "lines": Lines (a log file); False: nothing."""
    if progress == "lines":
        return Lines(total, unit, desc)
    return tqdm(total=total, unit=unit, desc=desc, disable=not progress, **kw)


def _read(path, tok):
    """(tokens, notes) of one file; MidiReadError if it has nothing to score."""
    score = load_score(path)
    ns = score_to_notes(score)
    if len(ns) == 0:
        raise MidiReadError("drum tracks only" if has_drums_only(score) else "no notes")
    if not ns.seconds > 0:  # bits per second would divide by zero
        raise MidiReadError("its music lasts 0 s: every note at one instant, a tempo of 0?")
    return tok.encode_notes(ns), ns


def _reread(path, tok, events: int) -> np.ndarray:
    try:
        tokens = _read(path, tok)[0]
    except MidiReadError:
        tokens = None
    if tokens is None or len(tokens) - 1 != events:
        raise UserError(f"{path} changed while it was being evaluated")
    return tokens


def file_metadata(paths) -> dict[str, dict]:
    """Each MIDI file's metadata (metadata.csv columns, or Aria-MIDI's), by path, for the folders given."""
    from .data import aria
    from .data.sources import iter_folder

    out: dict[str, dict] = {}
    done: set[Path] = set()
    for p in map(Path, paths):
        root = p if p.is_dir() else next((d for d in p.resolve().parents if (d / "metadata.csv").is_file()), None)
        if root is None or root in done:  # a file given alone: its corpus's metadata.csv, if any above it
            continue
        done.add(root)
        source = aria.iter_aria(root) if aria.is_aria_layout(root) else iter_folder(root)
        for sf in source:
            out[str(sf.path)] = sf.meta
            if not p.is_dir():
                out[str(Path(sf.path).resolve())] = sf.meta
    return out


def condition_rows(model, files, mode: str, style: dict, metadata: dict[str, dict] | None = None):
    """Per-file condition indices for evaluate: None (all any), one style for every file, or each
    file's own metadata conditions. Returns (rows or None, labels per file)."""
    vocab = model.config.conditions
    asked = {k: v for k, v in style.items() if v is not None}
    if mode == "none" and not asked:
        return None, [{} for _ in files]
    if not vocab:
        raise UserError("this checkpoint has no style conditions: evaluate it without --conditions/--composer/...")
    given = conditions.encode_request(vocab, **asked)
    rows, labels = [], []
    for f in files:
        index = {n: 0 for n in vocab}
        if mode == "metadata":
            meta = metadata or {}
            st = conditions.file_conditions(meta.get(str(f)) or meta.get(str(Path(f).resolve()), {}))
            index.update(conditions.file_codes(vocab, **st))
        index.update(given)  # flags win over metadata
        rows.append(np.array(list(index.values()), np.int64))
        labels.append(conditions.describe(vocab, index))
    return rows, labels


def evaluate(model, files, device="cpu", progress=True, *, precision="float32", batch_size=None,
             chunk=None, conditions=None, condition_labels=None, lanes: int | None = None, memory=None) -> dict:
    """Score files in batches (see scoring.py). Two passes over the files, so memory holds no
    token arrays beyond the batch's and KEEP_EVENTS: the first learns each file's length, notes
    and seconds (keeping the tokens while they fit), the second re-reads the rest, longest first
    (a long file left for last would run alone at batch 1).
    conditions: one array of condition indices per file (condition_rows), or None.
    lanes: on the CPU, independent batches scored side by side on one thread each (default: as
    many as PyTorch's threads; see _lanes).
    memory: a memory.Memory (cache, dynamic evaluation or both); None or mode none: the model alone."""
    files = list(files)
    tok = model.tokenizer
    d_batch, d_chunk = scoring.defaults(device)
    batch_size, chunk = batch_size or d_batch, chunk or d_chunk
    memory = None if memory is None or memory.mode == "none" else memory
    if memory is not None and memory.dynamic and precision != "float32":
        raise UserError("--memory dynamic/both adapts the float32 weights: use --precision float32")
    # checks precision before any reading
    forward = scoring.make_forward(model, precision, device, hidden=memory is not None and memory.cache)
    scorer = _scorer(model, memory, chunk, device)
    skipped, info, kept, budget = [], {}, {}, KEEP_EVENTS
    reading = _bar(len(files), "file", "reading", progress if len(files) >= 2 else False)
    for i, path in enumerate(files):
        reading.update(1)
        try:
            tokens, ns = _read(path, tok)
        except MidiReadError as e:
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        info[i] = (len(tokens) - 1, len(ns), ns.seconds)  # by index: a file given twice counts twice
        if len(tokens) <= budget:
            kept[i], budget = tokens, budget - len(tokens)
    reading.close()
    events = sum(v[0] for v in info.values())
    if not events:
        raise UserError(f"no usable MIDI file among {len(files)} given" + (f" ({skipped[0]['reason']})" if skipped else ""))
    order = sorted(info, key=lambda i: -info[i][0])

    def items(indices):
        return (scoring.Item(i, kept.pop(i) if i in kept else _reread(files[i], tok, info[i][0]),
                             cond=None if conditions is None else conditions[i]) for i in indices)

    if torch.device(device).type != "cpu":
        lanes = 1  # a GPU fills one wide batch
    elif lanes is None:
        lanes = torch.get_num_threads()
    lanes = max(1, min(int(lanes), len(order)))
    # Counted in events, not files: files are scored side by side, and a batch's events/s is
    # steady from the first chunk, so the ETA is honest from the start.
    bar = _bar(events, "event", "evaluate", progress, unit_scale=True)
    with bar:
        if lanes == 1:
            nats_of = {i: nats for i, nats, _ in scorer(forward, items(order), batch_size, bar.update)}
        else:
            nats_of = _lanes(model, precision, device, forward, [items(lane) for lane in _split(order, info, lanes)],
                             batch_size, scorer, bar, hidden=memory is not None and memory.cache)
    nats = sum(nats_of.values())
    notes = sum(v[1] for v in info.values())
    seconds = sum(v[2] for v in info.values())
    per_file = [{"path": str(files[i]), "events": info[i][0], "nats_per_event": round(nats_of[i] / info[i][0], 5)}
                | ({"conditions": condition_labels[i]} if condition_labels else {})
                | ({"memory": memory.mode} if memory is not None else {}) for i in info]
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
    } | ({"memory": memory.describe()} if memory is not None else {})


def _scorer(model, memory, chunk: int, device):
    """scorer(forward, items, rows, on_chunk) -> (key, nats, events) per file, with the memory asked."""
    if memory is not None and memory.dynamic:
        from . import dynamic

        return lambda forward, items, rows, on_chunk: dynamic.score(model, items, memory, device, on_chunk)
    proposes = key_downs(getattr(model, "tokenizer", None))
    return lambda forward, items, rows, on_chunk: scoring.score(forward, items, batch_size=rows, chunk=chunk,
                                                                 device=device, on_chunk=on_chunk, memory=memory,
                                                                 proposes=proposes)


def _split(order: list[int], info: dict, lanes: int) -> list[list[int]]:
    """Files (longest first) dealt to the lane with the fewest events so far: lanes of equal work."""
    out, load = [[] for _ in range(lanes)], [0] * lanes
    for i in order:
        k = load.index(min(load))
        out[k].append(i)
        load[k] += info[i][0]
    return [lane for lane in out if lane]


class _Stopped(Exception):
    """A lane ended early because another one failed (or Ctrl-C): never the error to report."""


LANE_MIN_BATCH = 16  # lanes share --batch_size, but none gets fewer rows than this


def _lanes(model, precision, device, forward, lanes: list, batch_size: int, scorer, bar, hidden=False) -> dict:
    """Score each lane's files in its own batch on its own Python thread, PyTorch at one thread.

    The ops release the GIL, so lanes run on separate cores without OpenMP's barrier at every op:
    beside a busy process, one batch on two OpenMP threads waits for the slower core at every op,
    while a lane sharing its core with that process slows only itself (2.7x the events/s in
    docs/benchmarks.md, run 7). Each lane has its own forward (its
    buffers are per call site) and a share of batch_size (at least LANE_MIN_BATCH rows), so memory
    stays near one batch's. The first failure stops every lane at its next chunk and is raised.
    """
    import threading
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    lock, stop, out = threading.Lock(), threading.Event(), {}
    forwards = [forward] + [scoring.make_forward(model, precision, device, hidden) for _ in lanes[1:]]
    rows = max(LANE_MIN_BATCH, math.ceil(batch_size / len(lanes)))

    def tick(n):
        if stop.is_set():
            raise _Stopped
        with lock:
            bar.update(n)

    def run(k):
        try:
            for i, nats, _ in scorer(forwards[k], lanes[k], rows, tick):
                out[i] = nats
        except BaseException:
            stop.set()  # the others end at their next chunk, not when they are done
            raise

    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [pool.submit(run, k) for k in range(len(lanes))]
        try:
            # in short waits: a signal the kernel hands to a lane's thread wakes no one, and
            # Python runs its handler (Ctrl-C, SIGTERM) only when the main thread wakes
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                if any(f.exception() is not None for f in done):
                    break
        except BaseException:  # Ctrl-C or SIGTERM in the main thread
            stop.set()
            raise
        errors = [f.exception() for f in futures]  # waits for the stopped lanes too
        first = next((e for e in errors if e is not None and not isinstance(e, _Stopped)), None)
        if first is not None:
            raise first
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score MIDI files with a model: nats/event, perplexity, bits/second",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS", help="MIDI files and folders")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (default: the shipped model)")
    p.add_argument("--split", default=None, help="with a folder holding metadata.csv: only files of this split")
    p.add_argument("--json", type=Path, default=None, help="write the full result as JSON here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=scoring.SCORE_PRECISIONS, default="float32",
                   help="default float32; int8: CPU only, faster (10-16x the single-file path on one core of an AMX/VNNI "
                        "Xeon, 2x on an AVX2-only CPU); totals within ~2e-4 nats/event of float32, single "
                        "valid files within 4.5e-4 on that Xeon and 1.3e-3 on AVX2 (docs/benchmarks.md)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="files scored side by side (default 64 on CPU, 256 on GPU)")
    threads.add_argument(p, threads.LANES_HELP)
    p.add_argument("--conditions", choices=("none", "metadata"), default="none",
                   help="metadata: score each file under its own composer, period and kind (metadata.csv or "
                        "Aria-MIDI's; --composer/--period/--kind given too win over it); none: every "
                        "condition unknown (default)")
    conditions.add_arguments(p, scoring=True)
    memory.add_arguments(p)
    p.add_argument("--no_progress", action="store_true",
                   help="no progress bar (on a terminal) or progress lines every ~10 s (in a log file or pipe)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .generate import load_model

    files = collect(args.paths, args.split)
    if not files:
        raise UserError("no MIDI files found in " + ", ".join(map(str, args.paths)))
    if args.json:
        writable_folder(args.json.parent if str(args.json.parent) else Path("."))  # made at the end, if need be
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.precision == "int8" and torch.device(args.device).type != "cpu":
        raise UserError("--precision int8 runs on the CPU only: use float32 on a GPU")
    lanes = args.threads or threads.default_lanes()  # lanes do not fight: see there
    # set once for the run: a thread per lane (evaluate never sets them again)
    threads.apply(1 if lanes > 1 and torch.device(args.device).type == "cpu" else args.threads)
    model = load_model(args.checkpoint, args.device)
    style = {n: getattr(args, n) for n in conditions.FILE_CONDITIONS}
    metadata = file_metadata(args.paths) if args.conditions == "metadata" else None
    rows, labels = condition_rows(model, files, args.conditions, style, metadata)
    # a terminal gets a bar; a log file or pipe a line every ~10 s (a bar there is silence, then one long line)
    progress = False if args.no_progress else True if sys.stderr.isatty() else "lines"
    mem = memory.from_args(model, args)
    r = evaluate(model, files, args.device, progress=progress,
                 precision=args.precision, batch_size=args.batch_size, conditions=rows, lanes=lanes,
                 condition_labels=labels if rows is not None else None, memory=mem)
    given = {k: v for k, v in style.items() if v is not None}
    mode = args.conditions if args.conditions == "metadata" or not given else "given"
    r["conditions"] = {"mode": mode, **given}
    if rows is not None and not any(r_.get("conditions") for r_ in r["per_file"]):
        print("warning: no file had metadata conditions (no metadata.csv with a `path` column above them?): "
              "every file was scored unconditioned", file=sys.stderr)
    if args.json:
        with output_folder(args.json):
            write_json(args.json, r)
    cond = r["conditions"]
    shown = "" if cond == {"mode": "none"} else "conditions " + ", ".join(f"{k} {v}" for k, v in cond.items()) + ", "
    bps = "bits/s n/a (0 s of music)" if r["bits_per_second"] is None else f"{r['bits_per_second']:.1f} bits/s"
    if mem.mode != "none":
        shown += f"memory {mem.mode} (" + ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                                     for k, v in r["memory"].items() if k != "mode") + "), "
    print(f"{r['files']} files ({len(r['skipped'])} skipped), {r['events']:,} events, {r['seconds'] / 60:.1f} min: "
          f"{r['nats_per_event']:.4f} nats/event, perplexity {r['perplexity']:.2f}, {shown}"
          f"{r['nats_per_note']:.3f} nats/note, {bps}")
    for s in r["skipped"][:SHOW_SKIPPED]:
        print(f"  skipped {s['path']}: {s['reason']}", file=sys.stderr)
    if len(r["skipped"]) > SHOW_SKIPPED:
        print(f"  ... and {len(r['skipped']) - SHOW_SKIPPED} more (all in --json's `skipped`)", file=sys.stderr)
    return 0
