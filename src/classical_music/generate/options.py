"""SamplingOptions: how each next event is chosen, with the one set of defaults and bounds that
`generate`, the studio's jobs and play-along share (its flags, request models and checks are read
from LIMITS, never written out again).

To add a sampling option: a field here, its Limit in LIMITS, and its use in sampling.sample();
the CLI flag (command.add_arguments) and the studio's request field (web/requests.py) take their
default, bounds and help from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from ..errors import UserError

MAX_NOTE_SECONDS = 10.0  # longest key-down generation allows; real playing: 99.9 % under ~12 s
# Floors: below them sampling is plain greedy decoding, and at 1e-300 the logits overflow to inf
# and the step fails as if the model were broken. Above MAX_TEMPERATURE is noise.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0
MIN_TOP_P = 0.01


class Limit(NamedTuple):
    lo: float
    hi: float  # math.inf: no upper bound (but finite)
    hi_open: bool = False  # hi itself refused
    off: str = ""  # what the neutral value means, for messages ("0 = off")

    def check(self, name: str, value, flag: str = "--") -> None:
        ok = isinstance(value, (int, float)) and math.isfinite(value) and self.lo <= value
        ok = ok and (value < self.hi if self.hi_open else value <= self.hi)
        if not ok:
            top = ("" if math.isinf(self.hi) else f" and {'below' if self.hi_open else 'at most'} {self.hi:g}")
            off = f" ({self.off})" if self.off else ""
            raise UserError(f"{flag}{name} must be at least {self.lo:g}{top}{off}, got {value!r}")

    def pydantic(self) -> dict:
        """Field(...) keyword arguments for a request model."""
        out = {"ge": self.lo}
        if not math.isinf(self.hi):
            out["lt" if self.hi_open else "le"] = self.hi
        return out


LIMITS = {
    "temperature": Limit(MIN_TEMPERATURE, MAX_TEMPERATURE),
    "top_k": Limit(0, math.inf, off="0 = off"),
    "top_p": Limit(MIN_TOP_P, 1.0, off="1 = off"),
    "min_p": Limit(0.0, 1.0, hi_open=True, off="0 = off"),
    "max_note_seconds": Limit(0.0, math.inf, off="0 = no limit"),
    "release": Limit(0.0, 10.0, off="0 = off"),
    "guidance": Limit(0.0, 10.0, off="1 = off"),
    "steer": Limit(0.0, 10.0, off="0 = off"),
}

HELP = {
    "temperature": "> 1 wilder, < 1 safer (default 1.0)",
    "top_k": "sample among the k likeliest events (0 = off)",
    "top_p": "nucleus sampling: smallest set with this mass (1 = off)",
    "min_p": "drop events under min_p x the likeliest one (0 = off)",
    "max_note_seconds": f"release any key held this long (default {MAX_NOTE_SECONDS:g}; 0 = no limit)",
    "release": "strength (0-10, default 1; 0 = off) of a nudge on key-ups: a key that has rung past "
               "1.5 s, or any key while more than 8 are down; off, pieces drift to long-held clusters",
    "guidance": "classifier-free guidance: > 1 sets the style further apart from the rest, at some cost in "
                "naturalness and twice the rows (1 = off; measured in MODEL_CARD.md, Style control)",
    "steer": "also hold --density and --key while sampling, at this strength (0 = the model alone)",
}


@dataclass(frozen=True)
class SamplingOptions:
    """What shapes each step's distribution; checked once by validate()."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    max_note_seconds: float = MAX_NOTE_SECONDS
    release: float = 1.0  # nudge up keys held long or many at once (sampling.RELEASE_*)
    guidance: float = 1.0  # classifier-free guidance: 1 = off, > 1 follows the conditions harder
    steer: float = 1.0  # hold density and key while sampling too (0 = the model's conditions alone)

    def validate(self, flag: str = "--") -> "SamplingOptions":
        """self, or UserError naming the first bad option (flag: "--" on the command line, "" in a request)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in (int, "int") and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"{flag}{f.name} must be a whole number, got {value!r}")
            LIMITS[f.name].check(f.name, value, flag)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def pick(cls, values) -> "SamplingOptions":
        """From any object or dict carrying some of the fields (the rest default)."""
        get = values.get if isinstance(values, dict) else (lambda k, d=None: getattr(values, k, d))
        return cls(**{f.name: get(f.name) for f in fields(cls) if get(f.name) is not None})


DEFAULT = SamplingOptions()


def add_arguments(p, names=None) -> None:
    """argparse flags for the options (all, or `names`), with defaults and help from here."""
    for f in fields(SamplingOptions):
        if names is None or f.name in names:
            p.add_argument(f"--{f.name}", type=int if f.type in (int, "int") else float,
                           default=getattr(DEFAULT, f.name), help=HELP[f.name])
