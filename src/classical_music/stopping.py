"""Ctrl-C and SIGTERM: every command stops in one line ("stopped") and takes its children with it.

SIGTERM's default action kills the process on the spot: no `finally`, no atexit, so forked
workers (render chunks, prepare's pool) were left running with parent 1, one of them holding
`serve`'s listening socket. :func:`handle_signals` makes SIGTERM raise :class:`Stopped` (a
KeyboardInterrupt, so code that cleans up after Ctrl-C cleans up after it too), and
:func:`child_setup` makes each forked worker die with its parent even when the parent is killed
with SIGKILL (Linux: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


class Stopped(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived; the exit status is 128 + signum, as a shell reports it."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


def _raise(signum, frame):
    raise Stopped(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """For the duration: SIGTERM raises Stopped in the main thread (SIGINT raises KeyboardInterrupt
    as always). A no-op off the main thread, where Python cannot install handlers."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def exit_status(e: KeyboardInterrupt) -> int:
    return 128 + int(getattr(e, "signum", signal.SIGINT))


_PR_SET_PDEATHSIG = 1


def child_setup() -> None:
    """First thing in a forked worker: the parent decides when it stops. Ctrl-C (sent to the whole
    process group) is ignored, SIGTERM (the parent's terminate) ends it at once, and on Linux the
    kernel kills it when the parent dies, however the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import multiprocessing

        parent = multiprocessing.parent_process()
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            return
        if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
            os._exit(1)
