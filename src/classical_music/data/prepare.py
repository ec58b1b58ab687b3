"""Preparation: MIDI files -> token cache, in parallel, incrementally, skipping bad files with a reason.

Workers parse and tokenize (symusic + vectorised numpy); the parent only appends finished token
arrays to the shard, so memory does not grow with the corpus.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..conditions import filter_form
from ..errors import UserError
from ..files import write_json
from ..locks import folder_lock
from ..notes import MidiReadError, has_drums_only, load_score, score_to_notes
from ..threads import cores
from ..tokenizer import NAMES as TOKENIZERS, get_tokenizer
from .cache import CacheWriter
from .sources import SourceFile, assign_split, iter_folder

MAX_EVENTS_PER_FILE = 4_000_000  # ~ 10 hours of dense playing; longer files are clipped


@dataclass
class PrepareConfig:
    source: Path
    out: Path = Path("data/prepared")
    tokenizer: str = "performance"
    workers: int = 1
    valid_fraction: float = 0.05
    genre: tuple = ()
    composer: tuple = ()
    period: tuple = ()
    min_audio_score: float | None = None
    report: Path | None = None
    progress: bool = True
    limit: int | None = None
    extra: dict = field(default_factory=dict)


_TOKENIZER = None


def _init_worker(name: str, params: dict) -> None:
    global _TOKENIZER
    _TOKENIZER = get_tokenizer(name, **params)


def encode_file(path: str):
    """(tokens, notes, music seconds, clipped) or a skip reason string. Never raises."""
    try:
        score = load_score(path)
        notes = score_to_notes(score, sort=False)  # the tokenizer orders events itself
        if len(notes) == 0:
            return "drum tracks only" if has_drums_only(score) else "no notes"
        tokens = _TOKENIZER.encode_notes(notes)
    except MidiReadError as e:
        return str(e)
    except MemoryError:
        return "too large to tokenize"
    except Exception as e:  # one odd file must never stop a million-file run
        return f"failed: {type(e).__name__}: {e}"[:300]
    clipped = len(tokens) > MAX_EVENTS_PER_FILE
    if clipped:
        tokens = np.concatenate([tokens[: MAX_EVENTS_PER_FILE - 1], [_TOKENIZER.eos_id]]).astype(np.uint16)
    return tokens, len(notes), round(notes.seconds, 3), clipped


def _init_pool_worker(name: str, params: dict) -> None:
    from ..stopping import child_setup

    child_setup()  # the parent stops the pool; a worker never outlives it
    _init_worker(name, params)


def _job(item):
    i, path = item
    return i, encode_file(path)


def iter_source(cfg: PrepareConfig):
    from . import aria

    if aria.is_aria_layout(cfg.source):
        return aria.iter_aria(
            cfg.source, genre=cfg.genre, composer=cfg.composer, period=cfg.period,
            min_audio_score=cfg.min_audio_score, valid_fraction=cfg.valid_fraction,
        )
    if any((cfg.genre, cfg.composer, cfg.period, cfg.min_audio_score is not None)):
        return _filter_folder(cfg)
    return iter_folder(cfg.source)


def _filter_folder(cfg: PrepareConfig):
    """metadata.csv columns filter a plain folder the same way Aria metadata does."""
    wanted = {k: {filter_form(k, v) for v in vals}
              for k, vals in (("genre", cfg.genre), ("composer", cfg.composer), ("period", cfg.period))}
    for sf in iter_folder(cfg.source):
        ok = all(not vals or filter_form(k, str(sf.meta.get(k, ""))) in vals for k, vals in wanted.items())
        if ok:
            yield sf


def prepare(cfg: PrepareConfig) -> dict:
    src = Path(cfg.source)
    if not src.exists():
        raise UserError(f"no such file or folder: {src}")
    if cfg.workers < 1:
        raise UserError("--workers must be at least 1")
    if next(iter(iter_source(cfg)), None) is None:  # before the cache folder exists: nothing half-made
        filters = any((cfg.genre, cfg.composer, cfg.period, cfg.min_audio_score is not None))
        raise UserError(f"no MIDI files (.mid, .midi) in {src}" + (" match the filters" if filters else "")
                        + ": nothing to prepare")
    with folder_lock(cfg.out, "data prepare"):  # two runs into one cache would interleave its shards
        return _prepare(cfg, src)


def _prepare(cfg: PrepareConfig, src: Path) -> dict:
    tokenizer = get_tokenizer(cfg.tokenizer)
    writer = CacheWriter(cfg.out, tokenizer)
    start = time.perf_counter()
    root = src if src.is_dir() else src.parent

    # First pass only counts (streaming), so the bar can show an ETA without holding a path list.
    total = sum(1 for _ in _todo(cfg, writer, root))
    if cfg.limit is not None:
        total = min(total, cfg.limit)
    pending: dict[int, tuple[SourceFile, str, int, float]] = {}

    def jobs():
        for i, (sf, key, size, mtime) in enumerate(_todo(cfg, writer, root)):
            if cfg.limit is not None and i >= cfg.limit:
                return
            pending[i] = (sf, key, size, mtime)
            yield i, str(sf.path)

    prepared, events, skipped, complete = 0, 0, [], False
    bar = tqdm(total=total, unit="file", disable=not cfg.progress, desc="prepare", smoothing=0.05)
    if cfg.workers == 1:
        _init_worker(tokenizer.name, tokenizer.params())
        results = map(_job, jobs())
        pool = None
    else:
        pool = get_context("spawn" if os.name == "nt" else "fork").Pool(
            cfg.workers, initializer=_init_pool_worker, initargs=(tokenizer.name, tokenizer.params())
        )
        results = pool.imap_unordered(_job, jobs(), chunksize=8)
    try:
        for i, res in results:
            sf, key, size, mtime = pending.pop(i)
            if isinstance(res, str):
                writer.skip(key, size, mtime, res)
                skipped.append({"path": str(sf.path), "reason": res})
            else:
                tokens, n_notes, music_seconds, clipped = res
                split = sf.split or assign_split(sf.group or key, cfg.valid_fraction)
                fields = {"split": split, "group": sf.group, "notes": n_notes, "music_seconds": music_seconds,
                          "meta": sf.meta}
                if clipped:
                    fields["clipped"] = True
                writer.add(key, size, mtime, tokens, **fields)
                prepared += 1
                events += len(tokens)
            bar.update(1)
        complete = True
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
        # files deleted from the source since the last run leave the index (only after a full pass)
        dropped = writer.drop_missing(root) if complete else 0
        stats = writer.close()
    seconds = time.perf_counter() - start
    report = {
        "prepared": prepared,
        "skipped": skipped,
        "events": events,
        "seconds": round(seconds, 3),
        "already_prepared": stats["files"] - prepared,
        "dropped": dropped,
        "files_per_second": round((prepared + len(skipped)) / seconds, 1) if seconds > 0 else None,
        "out": str(cfg.out),
        "cache": stats,
    }
    if cfg.report:
        path = Path(cfg.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, report)
    return report


def _todo(cfg, writer, root):
    """Source files not yet in the cache (same path, size and mtime), with their manifest key."""
    for sf in iter_source(cfg):
        try:
            st = os.stat(sf.path)
            size, mtime = st.st_size, st.st_mtime
        except OSError:
            size, mtime = -1, 0.0
        try:
            key = Path(sf.path).relative_to(root).as_posix()
        except ValueError:
            key = str(sf.path)
        if not writer.is_done(key, size, mtime):
            yield sf, key, size, mtime


def add_prepare_parser(data_sub) -> None:
    p = data_sub.add_parser(
        "prepare",
        help="tokenize a folder of MIDI files (or an Aria-MIDI download) into a training cache",
        description="Walk DIR for .mid/.midi files (metadata.csv columns travel along; its split column "
        "is honoured), tokenize them in parallel and write a cache training reads from. Re-running "
        "prepares only new or changed files.",
    )
    p.add_argument("source", type=Path, metavar="DIR", help="folder of MIDI files, an Aria-MIDI folder, or one file")
    p.add_argument("--out", type=Path, default=Path("data/prepared"), help="cache folder (default: data/prepared)")
    p.add_argument("--tokenizer", default="performance", choices=TOKENIZERS,
                   help="performance: Performance RNN events (default); remi: MidiTok REMI for score-like MIDI")
    p.add_argument("--workers", type=int, default=cores(), help="parallel processes (default: this machine's cores)")
    p.add_argument("--valid_fraction", type=float, default=0.05,
                   help="share of pieces held out for validation when the source gives no split")
    p.add_argument("--genre", action="append", default=[], help="keep only this genre (repeatable)")
    p.add_argument("--composer", action="append", default=[], help="keep only this composer (repeatable)")
    p.add_argument("--period", "--music-period", "--music_period", dest="period", action="append", default=[],
                   help="keep only this music period (repeatable)")
    p.add_argument("--min-audio-score", "--min_audio_score", dest="min_audio_score", type=float, default=None,
                   help="Aria-MIDI: keep segments whose transcription audio score is at least this")
    p.add_argument("--limit", type=int, default=None, help="prepare at most this many new files")
    p.add_argument("--report", type=Path, default=None, help="write a JSON report (prepared, skipped, events, seconds)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args) -> int:
    cfg = PrepareConfig(
        source=args.source, out=args.out, tokenizer=args.tokenizer, workers=args.workers,
        valid_fraction=args.valid_fraction, genre=tuple(args.genre), composer=tuple(args.composer),
        period=tuple(args.period), min_audio_score=args.min_audio_score, report=args.report,
        progress=not args.no_progress, limit=args.limit,
    )
    r = prepare(cfg)
    c = r["cache"]
    splits = ", ".join(f"{k} {v['files']} files/{v['events']:,} events" for k, v in c["splits"].items())
    print(
        f"prepared {r['prepared']} files ({r['events']:,} events), skipped {len(r['skipped'])}, "
        f"{r['already_prepared']} already in cache"
        + (f", dropped {r['dropped']} no longer in {args.source}" if r["dropped"] else "")
        + f", in {r['seconds']:.1f} s -> {r['out']} [{splits}]"
    )
    return 0
