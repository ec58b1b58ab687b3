"""Reading inputs safely and writing outputs whole or not at all.

Every input a command opens by name goes through :func:`open_regular` (or :func:`read_text`):
anything that is not a regular file is refused at once, since a fifo would block the read for
ever and a device could stream without end.

Writing: a crash, a kill or a full disk never leaves half a file.

Every writer goes through :func:`atomic_path`: write to a hidden name beside the target (same
filesystem, so ``os.replace`` is atomic), rename on success, delete on failure; :func:`staged_paths`
does the same for a set of files that stand or fall together. The temporary file
is created by the writer itself, so it gets the user's umask (``mkstemp`` would give 0600).
"""

from __future__ import annotations

import glob
import io
import json
import os
import stat
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError

STALE_SECONDS = 3600  # a temporary file this old was left by a killed writer


class NotRegularFile(UserError, OSError):
    """An input that is a fifo, a device, a socket or a folder. An OSError too, so a caller's
    `except OSError` (unreadable input) covers it as well."""


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular(path: str | os.PathLike, mode: str = "rb", encoding: str | None = None, **kw):
    """Open a file to read, refusing anything but a regular file without waiting on it
    (O_NONBLOCK: opening a fifo does not wait for a writer; it changes nothing for regular files).
    Missing or unreadable files raise the usual OSError; mode "r" opens text ("utf-8" default)."""
    if mode not in ("r", "rb"):
        raise ValueError(mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path}: not a regular file ({file_kind(st.st_mode)})")
    except BaseException:
        os.close(fd)
        raise
    f = os.fdopen(fd, "rb")
    if mode == "rb":
        return f
    return io.TextIOWrapper(f, encoding=encoding or "utf-8", **kw)


def require_regular(path: str | os.PathLike) -> None:
    """Refuse a non-regular file before handing its name to a library that opens it itself."""
    open_regular(path).close()


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    with open_regular(path, "r", encoding=encoding) as f:
        return f.read()


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


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", **options) -> "hashlib._Hash":
    """The hash of a file's bytes, read a megabyte at a time (hashlib.file_digest is Python 3.11+);
    options go to the algorithm (blake2b's digest_size)."""
    import hashlib

    h = hashlib.new(algorithm, **options)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h
