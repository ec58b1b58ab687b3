"""One run at a time per output folder: `data prepare --out`, `train --save_dir`, `finetune`,
`piano install` hold ``FOLDER/.lock`` for their whole run.

The lock is an ``flock`` on that file, so the kernel releases it when its holder dies however it
dies (kill -9 included): a lock file left behind by a dead process never blocks anyone, it is
simply taken over. The file records the holder's pid and command line, so a second run can say
who holds the folder. Forked children inherit the lock (they are part of the run).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not serialised
    fcntl = None

LOCK_NAME = ".lock"


class FolderBusy(UserError):
    """Another live process holds the folder."""


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(info['pid'])} ({str(info['command'])[:200]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold FOLDER/.lock for the duration (the folder is created). A second holder gets a
    FolderBusy (a UserError: one line, exit 2) naming the first's pid and command."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if fcntl is None:
        yield path
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as e:
            raise UserError(f"cannot lock {folder} ({what}): {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise FolderBusy(f"{folder} is in use by {who}: wait for it to finish, or use another folder "
                             f"for this {what}") from None
        except OSError:  # a filesystem without flock (some network mounts): do not block the run
            os.close(fd)
            yield path
            return
        # the holder before us may have removed the file between our open and our flock
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        record = json.dumps({"pid": os.getpid(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode("utf-8"), 0)
        yield path
    finally:
        if os.getpid() == _owner_pid(fd):  # a forked child leaving the block leaves the lock to its parent
            try:
                path.unlink()
                if created:
                    folder.rmdir()  # only when the run left it empty (it failed before writing)
            except OSError:
                pass
        os.close(fd)


def _owner_pid(fd: int) -> int | None:
    try:
        return int(json.loads(os.pread(fd, 4096, 0).decode("utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
