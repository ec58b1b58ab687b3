"""Where MIDI files come from: a plain folder (optionally with metadata.csv) or an Aria-MIDI tree.

Every source yields :class:`SourceFile` records; preparation does not care which source it was.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..files import NotRegularFile, open_regular

MIDI_SUFFIXES = {".mid", ".midi"}


@dataclass
class SourceFile:
    path: Path
    # Free-form columns that travel with the file into the cache (composer, title, period, ...).
    meta: dict = field(default_factory=dict)
    # Files with the same group always land in the same split (one piece, one recording).
    group: str = ""
    # "train" / "valid" / "test" when the source says so; None lets preparation assign one.
    split: str | None = None


def assign_split(group: str, valid_fraction: float = 0.05) -> str:
    """Deterministic split by hashing the group key, so re-runs and new files never move a group."""
    h = int.from_bytes(hashlib.blake2b(group.encode(), digest_size=8).digest(), "big")
    return "valid" if h / 2**64 < valid_fraction else "train"


def walk_midi(root: Path) -> Iterator[Path]:
    """MIDI files under root in a stable order, streamed (a million paths never sit in a list)."""
    root = Path(root)
    if not root.is_dir():
        # a file named on the command line, even a fifo or device: the reader says why it is skipped
        if root.suffix.lower() in MIDI_SUFFIXES and root.exists():
            yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in MIDI_SUFFIXES:
                yield Path(dirpath) / name


def read_metadata_csv(csv_path: Path) -> dict[str, dict]:
    """Rows of a metadata.csv with a `path` column, by path; a damaged table is one UserError."""
    table: dict[str, dict] = {}
    try:
        with open_regular(csv_path, "r", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames and "path" in reader.fieldnames:
                for row in reader:
                    if isinstance(row.get("path"), str):
                        table[Path(row["path"]).as_posix()] = row
    except UnicodeDecodeError as e:
        raise UserError(f"{csv_path} is not UTF-8 text (byte {e.start}): save it as UTF-8 CSV") from None
    except csv.Error as e:  # a field over csv's 128 KB limit, a NUL byte: not a metadata table
        raise UserError(f"{csv_path} line {reader.line_num}: not a readable CSV table ({e})") from None
    except NotRegularFile:
        raise
    except OSError as e:
        raise UserError(f"cannot read {csv_path}: {e.strerror or e}") from None
    return table


def iter_folder(root: Path) -> Iterator[SourceFile]:
    """All .mid/.midi files under root; metadata.csv (with a `path` column) adds columns and split."""
    root = Path(root)
    csv_path = root / "metadata.csv"
    table = read_metadata_csv(csv_path) if csv_path.is_file() else {}
    for path in walk_midi(root):
        rel = path.relative_to(root).as_posix()
        row = dict(table.get(rel, {}))
        row.pop("path", None)
        split = row.pop("split", None) or None
        group = row.get("piece") or rel
        yield SourceFile(path=path, meta=row, group=group, split=split)
