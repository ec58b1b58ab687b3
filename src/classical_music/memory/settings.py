"""The memory's settings: the modes, one run's Memory (checked), what a checkpoint's config.json
`memory` block and the flags make of it (resolve, composing) and the flags themselves."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..errors import UserError

MODES = ("none", "cache", "dynamic", "both")
EVENTS = ("all", "notes")  # what the cache may propose: any event, or key-downs only
RECALLS = ("states", "motifs")  # states: exp(theta h_t . h_i) over stored LSTM outputs; motifs: memory.motifs
# Used when a checkpoint's config.json has no `memory` block (tune-memory writes one).
DEFAULT_THETA, DEFAULT_LAM, DEFAULT_SIZE = 0.1, 0.1, 2000
DEFAULT_LR, DEFAULT_SEGMENT = 0.05, 128  # SGD on the mean loss: 0.03-0.1 gained most on two valid files, 0.3 diverged
MAX_SIZE = 100_000  # the state cache is ~size x hidden floats per file or piece: 100,000 x 512 is 205 MB


@dataclass(frozen=True)
class Memory:
    mode: str = "none"
    theta: float = DEFAULT_THETA  # the cache's sharpness: exp(theta h_t . h_i)
    lam: float = DEFAULT_LAM  # the cache's share of the mixture
    size: int = DEFAULT_SIZE  # events kept
    lr: float = DEFAULT_LR  # dynamic evaluation's SGD step
    segment: int = DEFAULT_SEGMENT  # events between two dynamic steps
    gap: int = 0  # the cache recalls only steps at least gap + 1 events back (0: all it keeps)
    events: str = "all"  # what the cache proposes: all events, or "notes" (key-downs only)
    recall: str = "states"  # how the cache finds what to propose: LSTM states (Grave et al.) or motifs
    register: float = 0.0  # composing, notes only: semitones a proposed pitch may stray from the hands (0: any)

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"--memory must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.theta) and self.theta >= 0):
            raise UserError(f"--memory_theta must be a number >= 0, got {self.theta}")
        if not 0 <= self.lam <= 1:
            raise UserError(f"--memory_lambda must be in [0, 1], got {self.lam}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_SIZE:
            raise UserError(f"--memory_size must be an integer in 1 ... {MAX_SIZE:,}, got {self.size!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise UserError(f"--memory_lr must be a number >= 0, got {self.lr}")
        if isinstance(self.segment, bool) or not isinstance(self.segment, int) or self.segment < 1:
            raise UserError(f"--memory_segment must be a positive integer, got {self.segment!r}")
        if isinstance(self.gap, bool) or not isinstance(self.gap, int) or not 0 <= self.gap < self.size:
            raise UserError(f"--memory_gap must be an integer in 0 ... memory size - 1 ({self.size - 1}), got {self.gap!r}")
        if self.events not in EVENTS:
            raise UserError(f"--memory_events must be one of {', '.join(EVENTS)}, got {self.events!r}")
        if self.recall not in RECALLS:
            raise UserError(f"--memory_recall must be one of {', '.join(RECALLS)}, got {self.recall!r}")
        if self.recall == "motifs" and self.events != "notes":
            raise UserError("--memory_recall motifs recalls pitches: it needs --memory_events notes")
        if not (math.isfinite(self.register) and self.register >= 0):
            raise UserError(f"--memory_register must be a number of semitones >= 0, got {self.register}")
        if self.register and self.events != "notes":
            raise UserError("--memory_register weighs recalled pitches: it needs --memory_events notes")

    @property
    def cache(self) -> bool:
        return self.mode in ("cache", "both")

    @property
    def dynamic(self) -> bool:
        return self.mode in ("dynamic", "both")

    def describe(self) -> dict:
        """What evaluate's JSON records: the mode and the parameters it used."""
        d = {"mode": self.mode}
        if self.cache:
            d.update(theta=self.theta, lambda_=self.lam, size=self.size)
            if self.gap or self.events != "all" or self.register or self.recall != "states":  # older JSON keeps its shape
                d.update(gap=self.gap, events=self.events, recall=self.recall, register=self.register)
            if self.recall == "motifs":
                del d["theta"]  # motifs weigh no states
        if self.dynamic:
            d.update(lr=self.lr, segment=self.segment)
        return {("lambda" if k == "lambda_" else k): v for k, v in d.items()}


def stored(model) -> dict:
    """The checkpoint's tuned `memory` block (config.json), or {}."""
    block = (getattr(model, "checkpoint_config", None) or {}).get("memory")
    return block if isinstance(block, dict) else {}


def resolve(model, mode: str | None, theta=None, lam=None, size=None, lr=None, segment=None, gap=None, events=None,
            register=None, recall=None, block: dict | None = None) -> Memory:
    """The memory a run uses: the flags given, else the checkpoint's tuned block, else the defaults.
    mode None takes the block's `default` mode (none where the checkpoint has no block)."""
    block = stored(model) if block is None else block
    keys = {"theta": "theta", "lam": "lambda", "size": "size", "lr": "lr", "segment": "segment", "gap": "gap",
            "register": "register"}
    base = {k: block[v] for k, v in keys.items()
            if isinstance(block.get(v), (int, float)) and not isinstance(block.get(v), bool)}
    for k in ("size", "segment", "gap"):  # JSON may spell 2000 as 2000.0; Memory checks the value itself
        if k in base and float(base[k]).is_integer():
            base[k] = int(base[k])
    for k in ("events", "recall"):
        if isinstance(block.get(k), str):
            base[k] = block[k]
    given = {k: v for k, v in dict(theta=theta, lam=lam, size=size, lr=lr, segment=segment, gap=gap,
                                   events=events, register=register, recall=recall).items() if v is not None}
    mode = mode if mode is not None else block.get("default", "none")
    merged = base | given
    # a flag given wins over the block's values that would contradict it (not the other way round):
    # --memory_events all leaves the motifs recall and the register weight, which need key-downs;
    # a --memory_size at or under the block's gap takes half the size as its gap
    if given.get("events") == "all":
        if "recall" not in given:
            merged["recall"] = "states"
        if "register" not in given:
            merged["register"] = 0.0
    if "size" in given and "gap" not in given and merged.get("gap", 0) >= merged["size"]:
        merged["gap"] = merged["size"] // 2
    return Memory(mode=mode, **merged)


# Composing uses the cache only: dynamic evaluation would take gradient steps on the model's own
# samples (a checkpoint whose default is dynamic or both composes with none or the cache).
COMPOSING_MODES = ("none", "cache")


def compose_block(model) -> dict:
    """The block composing reads: the checkpoint's `memory` block with its `compose` part (tuned on
    the pieces the model composes rather than on valid likelihood) laid over it, when it has one."""
    block = stored(model)
    part = block.get("compose")
    return block | part if isinstance(part, dict) else block


def composing(model, mode: str | None, theta=None, lam=None, size=None, gap=None, events=None, register=None,
              recall=None) -> Memory:
    """The memory a piece is composed with: as resolve() from compose_block(), the dynamic part of a
    default dropped."""
    m = resolve(model, mode, theta, lam, size, gap=gap, events=events, register=register, recall=recall,
                block=compose_block(model))
    return m if m.mode in COMPOSING_MODES else replace(m, mode="cache" if m.cache else "none")


def add_arguments(parser, modes=MODES, default_help: str = "the checkpoint's config.json block's default: the shipped "
                  "model's is cache; none without a block") -> None:
    g = parser.add_argument_group("memory of the piece (classical_music.memory; tuned values from config.json)")
    said = "cache: the continuous cache over the LSTM's own past"
    if "dynamic" in modes:
        said += "; dynamic: a gradient step after each segment; both"
    g.add_argument("--memory", choices=modes, default=None, help=f"{said} (default: {default_help})")
    g.add_argument("--memory_theta", type=float, default=None, help="cache sharpness theta in exp(theta h_t.h_i)")
    g.add_argument("--memory_lambda", type=float, default=None, help="cache share of the mixture, 0-1")
    g.add_argument("--memory_size", type=int, default=None, help="events the cache keeps")
    g.add_argument("--memory_gap", type=int, default=None, help="the cache recalls only events at least this many + 1 back")
    g.add_argument("--memory_events", choices=EVENTS, default=None,
                   help="what the cache proposes: all events, or notes (key-downs only; timing is the model's)")
    g.add_argument("--memory_recall", choices=RECALLS, default=None,
                   help="how the cache finds what to propose: states (the LSTM's, similar to now) or motifs (with "
                        "notes: where the last 4 intervals were heard before, the interval that followed)")
    if "dynamic" not in modes:  # composing only: scoring has no hands to stay near
        g.add_argument("--memory_register", type=float, default=None,
                       help="with notes: semitones a recalled pitch may lie from the piece's last 8 key-downs "
                            "(a Gaussian weight; 0: any)")
    if "dynamic" in modes:
        g.add_argument("--memory_lr", type=float, default=None, help="dynamic evaluation: SGD step size")
        g.add_argument("--memory_segment", type=int, default=None, help="dynamic evaluation: events per step")


def from_args(model, args) -> Memory:
    return resolve(model, args.memory, args.memory_theta, args.memory_lambda, args.memory_size,
                   getattr(args, "memory_lr", None), getattr(args, "memory_segment", None),
                   getattr(args, "memory_gap", None), getattr(args, "memory_events", None),
                   recall=getattr(args, "memory_recall", None))


def with_mode(memory: Memory, mode: str) -> Memory:
    return replace(memory, mode=mode)


def as_block(memory: Memory, default: str, **measured) -> dict:
    """A config.json `memory` block: the tuned parameters, the default mode and what was measured."""
    d = asdict(memory)
    d.pop("mode")
    d["lambda"] = d.pop("lam")
    return {"default": default, **d, **measured}
