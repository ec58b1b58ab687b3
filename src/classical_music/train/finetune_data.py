"""What `finetune` learns from and is judged on: the user's folder prepared into a cache, a fifth
of its pieces held out (by piece, or the folder's own split), and a fixed, cheap subset of the
shipped corpus's valid split that says whether the rest of the music was forgotten."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import conditions
from ..errors import UserError
from ..files import file_digest

HOLD_OUT = 0.2  # the share of pieces held out when the folder gives no split of its own
OPENING_EVENTS = 20_000  # enough for any piece's first two minutes (~170 events/s)
# Held-out pieces are scored from their start with the LSTM state carried (as `evaluate` does),
# up to these many events in all, each file getting an equal share: the report at the end, and the
# smaller check between training stretches that picks the best weights and stops early.
REPORT_EVENTS = 100_000
CHECK_EVENTS = 12_000
# The shipped corpus's valid split, as a forgetting check: a fixed subset, scored in int8.
REFERENCE = Path("../shared/data/classical-piano")
REFERENCE_FILES = 16
REFERENCE_EVENTS = 2_500  # the first this many events of each


@dataclass
class Folder:
    """The user's music, prepared: cache file ids of the part to learn from and the held-out part."""

    cache: object  # data.cache.Cache
    train: np.ndarray
    held_out: np.ndarray
    pieces: int  # held-out pieces
    train_pieces: int
    skipped: list
    own_split: bool  # the folder's metadata.csv split was used
    keys: list  # each cache file's path inside the folder
    groups: list = field(default_factory=list)  # each cache file's piece

    @property
    def train_events(self) -> int:
        return int(self.cache.length[self.train].sum())

    @property
    def train_hours(self) -> float:
        return float(self.cache.hours[self.train].sum())


def prepare_folder(folder: Path, cache_dir: Path, tokenizer, progress: bool = True, workers: int = 1) -> Folder:
    """Prepare FOLDER into cache_dir (incremental: a kept --cache re-prepares only what changed)
    with the checkpoint's own tokenizer, then choose the held-out pieces among the usable files."""
    from ..data.cache import SPLITS, Cache, read_manifest
    from ..data.prepare import PrepareConfig, prepare
    from ..tokenizer import NAMES as TOKENIZERS

    if not folder.exists():
        raise UserError(f"no such folder: {folder}")
    if tokenizer.name not in TOKENIZERS:
        raise UserError(f"the checkpoint's tokenizer {tokenizer.name!r} cannot prepare MIDI files")
    probe = _tokenizer_of(tokenizer.name)
    if probe.to_dict() != tokenizer.to_dict():
        raise UserError(f"the checkpoint's tokenizer {tokenizer.to_dict()} is not the one `data prepare` makes "
                        f"({probe.to_dict()}): fine-tune a checkpoint with the standard vocabulary")
    # valid_fraction 0: a split is kept only where the folder's metadata.csv (or Aria) gives one
    report = prepare(PrepareConfig(source=folder, out=cache_dir, tokenizer=tokenizer.name, workers=workers,
                                   valid_fraction=0.0, progress=progress))
    cache = Cache(cache_dir)
    if len(cache.length) == 0:
        first = report["skipped"][0] if report["skipped"] else None
        why = f" (e.g. {Path(first['path']).name}: {first['reason']})" if first else ""
        raise UserError(f"no usable MIDI file in {folder}: {len(report['skipped'])} skipped{why}")
    # each cache file's piece (its group), matched on where its events are
    where = {(int(s), int(o)): i for i, (s, o) in enumerate(zip(cache.shard, cache.offset))}
    group, keys = [""] * len(cache.length), [""] * len(cache.length)
    for rec in read_manifest(cache_dir / "manifest.jsonl"):
        i = where.get((rec.get("shard"), rec.get("offset")))
        if i is not None:
            group[i], keys[i] = rec.get("group") or rec["key"], rec["key"]
    usable = np.flatnonzero(cache.length >= 2)
    split = cache.split
    train_code = SPLITS.index("train")
    own = usable[split[usable] != train_code]
    if len(own) and len(own) < len(usable):
        held = own
        own_split = True
    else:
        held = held_out_files(usable, [group[i] for i in usable], folder)
        own_split = False
    train = np.setdiff1d(usable, held)
    pieces = len({group[i] for i in held})
    train_pieces = len({group[i] for i in train})
    return Folder(cache, train, held, pieces, train_pieces, report["skipped"], own_split, keys, group)


def _tokenizer_of(name: str):
    from ..tokenizer import get_tokenizer

    return get_tokenizer(name)


def held_out_files(files: np.ndarray, groups: list[str], folder: Path) -> np.ndarray:
    """A fifth of the pieces (at least one), chosen by a hash of each piece's name: the same
    pieces on every run, and all files of a piece on one side."""
    pieces = sorted(set(groups))
    if len(pieces) < 2:
        n = len(files)
        raise UserError(f"{folder} has {n} usable MIDI file{'s' * (n != 1)} of one piece: fine-tuning needs at "
                        "least 2 pieces (one to learn from, one held out to check what it learned)")
    k = max(1, round(len(pieces) * HOLD_OUT))
    ranked = sorted(pieces, key=lambda g: hashlib.blake2b(g.encode(), digest_size=8).digest())
    chosen = set(ranked[:k])
    return np.array([f for f, g in zip(files, groups) if g in chosen], np.int64)


def cache_items(cache, ids, budget: int) -> list:
    """scoring.Items of these cache files, each cut to an equal share of `budget` events."""
    from ..scoring import Item

    ids = list(map(int, ids))
    share = max(256, math.ceil(budget / max(1, len(ids))))
    return [Item(i, cache.tokens(i, 0, share + 1).astype(np.int64)) for i in ids]


def reference_items(folder_files, tokenizer, root: Path | None = None) -> tuple[list, str]:
    """(items, what was measured) of the shipped corpus's valid split, without the files of the
    user's folder (matched by content): a fixed subset of REFERENCE_FILES files, each its first
    REFERENCE_EVENTS events. No items (and why) when the corpus is not here."""
    from ..data.sources import iter_folder
    from ..notes import MidiReadError
    from ..evaluate import _read
    from ..scoring import Item

    root = Path(root) if root is not None else REFERENCE
    if not (root / "metadata.csv").is_file():
        return [], f"not measured ({root} not found: give --reference DIR)"
    mine = {digest(p) for p in folder_files}
    valid = sorted((sf.path for sf in iter_folder(root) if sf.split == "valid"), key=str)
    valid = [p for p in valid if digest(p) not in mine]
    if not valid:
        return [], f"not measured (every valid file of {root} is in the folder)"
    step = max(1, len(valid) // REFERENCE_FILES)
    items = []
    for p in valid[::step][:REFERENCE_FILES]:
        try:
            tokens = _read(p, tokenizer)[0]
        except MidiReadError:
            continue
        items.append(Item(str(p), tokens[: REFERENCE_EVENTS + 1].astype(np.int64)))
    what = (f"{len(items)} of its {len(valid)} valid files"
            + (" not in the folder" if mine else "") + f", first {REFERENCE_EVENTS:,} events each, int8")
    return items, what


OWN_PIECES, OWN_EVENTS, OWN_SEED = 8, 2_500, 20261207


def own_music_items(model, pieces: int = OWN_PIECES, seed: int = OWN_SEED) -> tuple[list, str]:
    """Where the shipped corpus is not here (a user's machine), the forgetting check scores the
    base model's own music instead: OWN_PIECES pieces of OWN_EVENTS events it composes at a fixed
    seed, unconditioned. The rise of a fine-tuned model's nats/event on them (about how far its
    predictions moved from the base model's, where the base model goes) tracked the corpus's own
    rise near the bound: +0.136 / +0.134, +0.050 / +0.043, +0.101 / +0.103 for models fine-tuned on
    Bach chorales, reading lower far past it (+0.30 / +0.43; docs/benchmarks.md, "Fine-tuning")."""
    from ..generate.composer import compose
    from ..scoring import Item

    bos = np.array([model.tokenizer.bos_id], np.int64)
    rows = compose(model, bos, seconds=None, events=OWN_EVENTS, num_samples=pieces, seed=seed).rows
    items = [Item(f"own{i}", np.concatenate([bos, np.asarray(r, np.int64)])) for i, r in enumerate(rows) if len(r)]
    return items, f"{len(items)} pieces of {OWN_EVENTS:,} events it composed at seed {seed}"


def digest(path) -> str:
    """A file's content digest (blake2b, 16 bytes): how folders and checkpoints name the same MIDI file."""
    try:
        return file_digest(path, "blake2b", digest_size=16).hexdigest()
    except OSError:
        return f"unreadable:{path}"


MAX_TRAINED_ON = 2_000_000  # digests read from a checkpoint's trained_on.txt at most (~66 MB)


def trained_on(model) -> set[str]:
    """The digests of the files the model learned from (checkpoint.TRAINED_ON_NAME), or none."""
    from ..checkpoint import TRAINED_ON_NAME

    folder = getattr(model, "checkpoint_folder", None)
    out: set[str] = set()
    if folder is None:
        return out
    try:
        with open(Path(folder) / TRAINED_ON_NAME, encoding="ascii", errors="replace") as f:
            for line in f:
                line = line.strip()
                if len(line) == 32 and all(c in "0123456789abcdef" for c in line):
                    out.add(line)
                if len(out) >= MAX_TRAINED_ON:
                    break
    except OSError:
        pass
    return out


def trained_on_text(digests) -> bytes:
    return "".join(f"{d}\n" for d in sorted(digests)).encode("ascii")


def folder_files(folder: Path) -> list[Path]:
    from ..data.sources import walk_midi

    return list(walk_midi(folder))


def folder_identity(folder: Path) -> str:
    """What `--out` records of the folder a model learned from (its resolved path)."""
    return str(Path(folder).resolve())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def opening_blocks(data: Folder, tokenizer, folder: Path) -> dict[str, dict]:
    """The config.json blocks of how densely the pieces to learn from open (conditions.density) and
    in which keys (conditions.keys' home keys), so pieces from the new model draw your music's pace
    and keys rather than the shipped corpus's; a block with too few pieces is left out."""
    density: dict[str, list[float]] = {}
    keys: dict[str, list[int]] = {}
    for i in map(int, data.train):
        notes = tokenizer.decode(data.cache.tokens(i, 0, OPENING_EVENTS).astype(np.int64))
        if not len(notes):
            continue
        piece = data.groups[i] if data.groups else str(i)
        d = conditions.opening_density(notes.onset)
        if d is not None:
            density.setdefault(piece, []).append(d)
        opening = notes.onset < notes.onset.min() + conditions.OPENING_SECONDS
        k = conditions.estimate_key(notes.pitch[opening], conditions.note_durations(notes)[opening])
        if k is not None:
            keys.setdefault(piece, []).append(k)
    source = f"finetune folder {folder.name}, the part learned from"
    blocks = {conditions.OPENING_KEY: conditions.opening_block(density, source),
              conditions.HOME_KEYS_KEY: conditions.home_keys_block(keys, source)}
    return {k: v for k, v in blocks.items() if v is not None}
