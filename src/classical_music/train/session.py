"""What a training run checks and says around its loop: a missing cache, a save dir that holds
another run, Ctrl-C / SIGTERM, and how long the run will take (loop.py keeps the loop itself)."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

from ..errors import UserError

# Files and folders of a run in SAVE_DIR (the dot names are a checkpoint swap a crash interrupted).
RUN_ENTRIES = ("best", "last", ".best.old", ".last.old", "metrics.jsonl", "tensorboard")
SLOW_SECONDS = 3600.0  # a CPU run estimated longer than this gets the faster options


def missing_cache_message(data: Path) -> str:
    """`--data` is not a prepared cache: say what to run, never preparing into the corpus itself."""
    from ..data.sources import walk_midi

    if data.is_dir() and next(walk_midi(data), None) is not None:
        out = Path("data/prepared")
        if _inside(out, data):
            out = Path(f"{data.resolve().name}-prepared")
        return (f"{data} holds MIDI files, not a prepared cache: run `classical-music data prepare {data} "
                f"--out {out}`, then train with `--data {out}`")
    return f"no prepared data at {data}: run `classical-music data prepare DIR --out {data}` first"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_save_dir(save_dir: Path, overwrite: bool) -> None:
    """A new run never mixes with an old one in the same folder (curves, best/, last/)."""
    held = [name for name in RUN_ENTRIES if (save_dir / name).exists()]
    if held and not overwrite:
        raise UserError(f"{save_dir} already holds a run ({', '.join(held)}): add --resume to continue it, "
                        "--overwrite to replace it, or choose another --save_dir")


def clear_run(save_dir: Path) -> None:
    """--overwrite: remove the old run's files (only those; anything else in the folder stays)."""
    for name in RUN_ENTRIES:
        p = save_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


class StopOnSignal:
    """SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after the current step, so it can save
    last/ and exit 130; a second signal stops at once (KeyboardInterrupt, nothing saved)."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal() works only there
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


def quiet_worker(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process: a worker killed by the terminal's
    SIGINT would otherwise break the loader before last/ is saved."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Estimate:
    """Times the first few steps after the first (which warms up) and says, once, how long the
    whole run will take; on a CPU, when that is long, it names the faster options."""

    def __init__(self, total_steps: int, device, write=print, min_steps: int = 3, min_seconds: float = 10.0,
                 small: bool = False):
        self.total_steps, self.device, self.write = total_steps, device, write
        self.small = small  # already the small recipe's size (or smaller): no "a smaller model" advice
        self.min_steps, self.min_seconds = min_steps, min_seconds
        self.t0: float | None = None
        self.s0 = 0
        self.done = False

    def after_step(self, step: int) -> None:
        if self.done:
            return
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.s0 = now, step
            return
        n, spent = step - self.s0, now - self.t0
        if n < self.min_steps and spent < self.min_seconds:
            return
        self.done = True
        left = self.total_steps - step
        if left <= 0:
            return
        eta = spent / n * left
        self.write(f"estimate: {left:,} more steps at {spent / n:.2f} s/step, about {duration(eta)} "
                   f"on {self.device} (validation and checkpoints add to it)")
        if eta > SLOW_SECONDS and self.device.type == "cpu":
            smaller = "" if self.small else \
                "a smaller model (--config recipes/small_cpu_model.json: 2 x 384, 2,400 steps), "
            self.write(f"faster: {smaller}fewer steps (--max_steps N), or a GPU (--device cuda; the shipped 3 x 512 "
                       "model trained in 9 minutes on one). Ctrl-C saves last/; --resume continues")
