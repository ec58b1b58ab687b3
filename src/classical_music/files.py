"""Writing outputs whole or not at all: a crash, a kill or a full disk never leaves half a file.

Every writer goes through :func:`atomic_path`: write to a hidden name beside the target (same
filesystem, so ``os.replace`` is atomic), rename on success, delete on failure; :func:`staged_paths`
does the same for a set of files that stand or fall together. The temporary file
is created by the writer itself, so it gets the user's umask (``mkstemp`` would give 0600).
"""

from __future__ import annotations

import glob
import json
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

STALE_SECONDS = 3600  # a temporary file this old was left by a killed writer


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique across threads too
    _sweep(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_paths() -> Iterator[Callable[[str | os.PathLike], Path]]:
    """Several files whole or none: `stage(path)` gives a hidden name to write `path` under
    (same suffix, so writers that go by it still can); all are renamed into place at the end,
    and none is if anything failed. For a command's outputs (a piece's MIDI, audio and picture).
    """
    pending: list[tuple[Path, Path]] = []

    def stage(path: str | os.PathLike) -> Path:
        path = Path(path)
        _sweep(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
        pending.append((tmp, path))
        return tmp

    try:
        yield stage
        for tmp, path in pending:
            os.replace(tmp, path)
    finally:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)


def _sweep(path: Path) -> None:
    """Remove what kill -9 left of earlier writes to this path (their names are unique)."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        try:
            if time.time() - old.stat().st_mtime > STALE_SECONDS:
                old.unlink()
        except OSError:
            pass


def writable_folder(folder: str | os.PathLike) -> None:
    """Fail now, not after the work, where an output folder cannot be made or written; make
    nothing yet (a failed run leaves no empty folder behind)."""
    from .errors import UserError

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {existing} is not writable")


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """The folder an output file goes into, made with its missing parents (every command creates
    them, as generate always did); when the block fails, the folders it made are removed again."""
    from .errors import UserError

    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    writable_folder(folder)
    made = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {folder}: {e.strerror or e}") from None
    try:
        yield folder
    except BaseException:
        for f in made:  # innermost first; stops at one that is not empty
            try:
                f.rmdir()
            except OSError:
                break
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent))
