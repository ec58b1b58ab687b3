"""The tokenizer seam: notes <-> integer events, saved as JSON beside caches and checkpoints."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import read_text, write_json
from ..notes import Notes

TOKENIZER_FILE = "tokenizer.json"
_REGISTRY: dict[str, type["Tokenizer"]] = {}
# The registered names, written out so a flag's choices need not import MidiTok (REMI) to list
# them; tests/test_tokenizer.py checks they are the registry's.
NAMES = ("performance", "remi")


def register(cls):
    _REGISTRY[cls.name] = cls
    return cls


class Tokenizer(ABC):
    name: str = ""
    pad_id = 0
    bos_id = 1
    eos_id = 2
    SPECIALS = ("PAD", "BOS", "EOS")

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode_notes(self, notes: Notes) -> np.ndarray:
        """Events for a whole piece, framed by BOS ... EOS, as uint16."""

    @abstractmethod
    def decode(self, tokens) -> Notes:
        """Notes for a token sequence; specials and malformed spans are ignored, never fatal."""

    @abstractmethod
    def token_name(self, token: int) -> str: ...

    # time and velocity resolution, reported by evaluation so numbers compare across tokenizers
    def resolution(self) -> dict:
        return {}

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, **self.params()}

    def params(self) -> dict:
        return {}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / TOKENIZER_FILE
        write_json(path, self.to_dict())
        return path

    def describe(self, tokens) -> list[str]:
        return [self.token_name(int(t)) for t in tokens]

    # -- the time grammar (optional) -------------------------------------------------------------
    # A tokenizer whose events say when each key goes down and up and how far time advances sets
    # `timed` and fills in what follows. Sampling's key rules and steering, play-along, the per-event
    # conditions and the training augmentations ask for these, never for raw ids, and skip or
    # refuse (require_timed) a tokenizer without them.
    timed = False
    steps_per_second = 0  # time steps per second of music
    key_downs = key_ups = time_shifts = velocities = slice(0, 0)  # id ranges: key_downs.start + pitch, ...
    max_shift_steps = 0  # the longest single time shift

    def require_timed(self, what: str) -> None:
        """One-line UserError unless this tokenizer has the time grammar `what` needs."""
        if not self.timed:
            raise UserError(f"{what} needs a checkpoint whose tokenizer has key and time events (performance); "
                            f"this one's is {self.name}")

    def shift_steps(self, tokens) -> np.ndarray:
        """Steps each token advances time by (0 for the others)."""
        raise NotImplementedError

    def key_events(self, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(is a key-down, is a key-up, pitch or -1) per token."""
        raise NotImplementedError

    def transpose(self, tokens, semitones: int) -> np.ndarray:
        """tokens with every key event moved by semitones (the caller keeps pitches in 0..127)."""
        raise NotImplementedError

    def shift_velocities(self, tokens, bins: int) -> np.ndarray:
        """tokens with every velocity moved by bins, clipped to the velocity range."""
        raise NotImplementedError

    def wait_tokens(self, steps: int) -> list[int]:
        """The fewest tokens that advance time by steps."""
        raise NotImplementedError

    def velocity_token(self, velocity: int) -> int:
        """The token that sets the MIDI velocity of the key-downs after it (to its bin)."""
        raise NotImplementedError

    def stretch(self, tokens, factor: float, return_source: bool = False):
        """tokens with time scaled by factor (and each one's index among the input tokens)."""
        raise NotImplementedError


def get_tokenizer(name: str, **params) -> Tokenizer:
    from . import performance, remi  # noqa: F401  (registration)

    if name not in _REGISTRY:
        raise UserError(f"unknown tokenizer {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """From a tokenizer.json or a folder holding one (a cache or a checkpoint)."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    try:
        d = json.loads(read_text(path))
    except FileNotFoundError:
        raise UserError(f"no tokenizer at {path}") from None
    except (ValueError, OSError) as e:  # NotRegularFile (a fifo) says so itself
        raise UserError(f"corrupt tokenizer file {path}" if isinstance(e, ValueError) else str(e)) from None
    from . import performance, remi  # noqa: F401  (registration)

    if not isinstance(d, dict) or d.get("name") not in _REGISTRY:
        what = f"unknown tokenizer {d.get('name')!r}" if isinstance(d, dict) else "not a JSON object"
        raise UserError(f"corrupt tokenizer file {path}: {what}")
    name = d.pop("name")
    d.pop("vocab_size", None)
    _check_params(path, _REGISTRY[name], d)
    return get_tokenizer(name, **d)


MAX_PARAM = 100_000  # steps per second, shift steps, velocity bins: anything near this is damage


def _check_params(path: Path, cls, params: dict) -> None:
    """Only the constructor's own parameters, each of its default's type; integers in 1..MAX_PARAM."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    for k, v in params.items():
        if k not in defaults:
            raise UserError(f"corrupt tokenizer file {path}: unknown key {k!r}")
        want = type(defaults[k])
        ok = type(v) is want and (want is not int or 1 <= v <= MAX_PARAM)
        if not ok:
            raise UserError(f"corrupt tokenizer file {path}: {k} must be "
                            + ("true or false" if want is bool else f"an integer in 1..{MAX_PARAM:,}")
                            + f", got {v!r}")
