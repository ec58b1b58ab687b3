"""The tokenizer seam: notes <-> integer events, saved as JSON beside caches and checkpoints."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import write_json
from ..notes import Notes

TOKENIZER_FILE = "tokenizer.json"
_REGISTRY: dict[str, type["Tokenizer"]] = {}


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

    def encode_score(self, score) -> np.ndarray:
        from ..notes import score_to_notes

        return self.encode_notes(score_to_notes(score))

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
        d = json.loads(path.read_text())
        name = d.pop("name")
    except FileNotFoundError:
        raise UserError(f"no tokenizer at {path}") from None
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"corrupt tokenizer file {path}") from None
    d.pop("vocab_size", None)
    tok = get_tokenizer(name, **d)
    return tok
