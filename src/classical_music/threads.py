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
`evaluate` is the exception: its threads are lanes that never wait for each other (default_lanes).
"""

from __future__ import annotations

import os

from .errors import UserError

HELP = ("CPU threads for PyTorch (default, or 0: half the cores, at least 1, or OMP_NUM_THREADS when set; "
        "more threads stall each other when other busy processes share the cores)")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (taskset, containers)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _env_threads() -> int | None:
    """OMP_NUM_THREADS when set to a positive integer: the user's own choice wins every default."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def default_threads() -> int:
    return _env_threads() or max(1, cores() // 2)


def default_lanes() -> int:
    """evaluate's lanes (independent batches on one thread each) when --threads is not given: all
    the cores, or OMP_NUM_THREADS. Lanes never wait for each other, so a core shared with a busy
    process slows only its own lane. Measured on 2 AMD EPYC cores, 20 valid files, int8 (run 7 in
    docs/benchmarks.md): quiet, 2 lanes 6,548 events/s against 4,059 on one thread; beside a busy
    process 4,783 against 4,029, where one batch on two OpenMP threads fell to 1,748."""
    return _env_threads() or cores()


LANES_HELP = ("CPU lanes: independent batches of files on one thread each, which never wait for each other "
              "(default, or 0: all the cores, or OMP_NUM_THREADS when set)")


def add_argument(parser, help: str = HELP) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=help)


def apply(threads: int | None) -> int:
    """Set PyTorch's CPU threads (None or 0: the default, in every command); returns the number set."""
    if threads is None or (threads == 0 and not isinstance(threads, bool)):
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads!r}")
    import torch  # here: `data prepare` asks cores() without loading PyTorch

    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
