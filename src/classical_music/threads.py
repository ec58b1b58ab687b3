"""How many CPU threads PyTorch uses: `--threads N` on train, evaluate, generate and serve.

OpenMP threads wait for each other at the end of every parallel operation, so when another
busy process holds one of the cores, the thread sharing that core with it holds up all the others
at every step: the whole run slows to the pace of its unluckiest thread. Measured on 2 cores
(docs/benchmarks.md, "CPU threads"): with other processes busy beside it, two threads ran batched
evaluation 1.8-2.2x and a training step 2.6-4x slower than one thread (the issue that asked for
this saw 2.2x and 5.5x), while on an idle machine a second thread gains at most 2x and in practice
less (the LSTM's small per-step matmuls do not split well). A lost factor of <= 2 on an idle box
is cheaper than a lost 2-5x on a shared one, so the default leaves half the cores (at least one)
to whoever else is running: one thread on 2 cores, 8 on 16. A run that owns the machine can pass
--threads with all of them; OMP_NUM_THREADS, when set, is respected as the user's own choice.
"""

from __future__ import annotations

import os

import torch

from .errors import UserError

HELP = ("CPU threads for PyTorch (default: half the cores, at least 1, or OMP_NUM_THREADS when set; "
        "more threads stall each other when other busy processes share the cores)")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (taskset, containers)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, cores() // 2)


def add_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=HELP)


def apply(threads: int | None) -> int:
    """Set PyTorch's CPU threads (None: the default); returns the number set."""
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads!r}")
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
