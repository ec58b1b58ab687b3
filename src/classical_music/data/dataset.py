"""Training windows drawn from the cache: X = events[i:i+L], y = events[i+1:i+L+1].

Each file is cut into ceil((n-1)/L) windows; every epoch shifts the cut points by a random
offset, so the model sees new boundaries without the dataset ever holding the corpus in RAM.
Augmentation (Performance tokenizer) works on the tokens directly: transpose, time stretch and
velocity shift, drawn from an RNG seeded by (seed, epoch, index) so it is reproducible anywhere.

With style conditions (a model's config.conditions vocabularies), each window also yields C [L, n]:
the conditions of each target event (composer, period, kind from the file's metadata; density and
key from the cache's per-event codes, key transposed with the notes). Condition dropout sets each
condition of a window to "any" (0) with probability cond_dropout, so the model also learns to
compose with any subset unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import conditions as cond
from .cache import Cache

PIANO_LOW, PIANO_HIGH = 21, 108


@dataclass
class AugmentConfig:
    transpose: int = 0  # up to ± this many semitones, kept inside the piano's range
    stretch: float = 0.0  # time scaled by a factor in [1 - stretch, 1 + stretch]
    velocity: int = 0  # velocity bins shifted by up to ± this many

    @property
    def active(self) -> bool:
        return bool(self.transpose or self.stretch or self.velocity)


class WindowDataset(Dataset):
    def __init__(self, cache_dir, split: str = "train", seq_len: int = 256, augment: AugmentConfig | None = None,
                 seed: int = 0, conditions: dict | None = None, cond_dropout: float = 0.0,
                 event_conditions: bool = True):
        self.cache = cache_dir if isinstance(cache_dir, Cache) else Cache(cache_dir)
        self.tokenizer = self.cache.tokenizer
        self.split = split
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.epoch = 0
        self.augment = augment if augment is not None and augment.active else None
        if self.augment and not self.tokenizer.timed:
            self.augment = None  # token-level augmentation needs the tokenizer's time grammar
        ids = self.cache.files(split)
        self.file_ids = ids[self.cache.length[ids] >= 2]
        self.lengths = self.cache.length[self.file_ids]
        per_file = np.maximum(1, -(-(self.lengths - 1) // self.seq_len))
        self.cum = np.cumsum(per_file)
        self.conditions = dict(conditions or {})
        self.cond_dropout = float(cond_dropout)
        missing = [n for n in self.conditions if n not in self.cache.available_conditions()]
        if missing:
            from ..errors import UserError

            raise UserError(f"{self.cache.root} has no {', '.join(missing)} conditions: run `classical-music data "
                            f"prepare` on it again to add them, or train with --conditions none")
        # Per-file codes of the metadata conditions, in the model's vocabularies.
        names = [n for n in cond.FILE_CONDITIONS if n in self.conditions]
        rows = [cond.file_codes(self.conditions, **{n: str(self.cache.styles[n][i]) for n in names})
                for i in self.file_ids.tolist()]
        self.file_codes = {n: np.array([r[n] for r in rows], np.int64) for n in names}
        # Valid windows can leave the per-event conditions unknown (they describe the future).
        self.use_events = bool(event_conditions)

    def __len__(self) -> int:
        return int(self.cum[-1]) if len(self.cum) else 0

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, *key) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *key])

    def __getitem__(self, i: int):
        f = int(np.searchsorted(self.cum, i, side="right"))
        k = i - (int(self.cum[f - 1]) if f else 0)
        n = int(self.lengths[f])
        L = self.seq_len
        # Per-file jitter for this epoch: the same for all windows of a file, so they do not overlap.
        jitter = int(self._rng(0, f).integers(0, L)) if n - 1 > L else 0
        start = max(0, min(k * L + jitter, n - 1 - L)) if k or jitter else 0
        rng = self._rng(1, i)
        stretch = 1.0
        if self.augment and self.augment.stretch:
            stretch = float(rng.uniform(1 - self.augment.stretch, 1 + self.augment.stretch))
        # Stretching changes the token count, so read enough to still fill L + 1 afterwards.
        need = L + 1 if stretch >= 1 else int(np.ceil((L + 1) / stretch)) + 8
        fid = int(self.file_ids[f])
        tokens = self.cache.tokens(fid, start, start + need).astype(np.int64)
        src, semitones = np.arange(len(tokens)), 0
        if self.augment:
            tokens, src, semitones = self._augment(tokens, rng, stretch)
        tokens, src = tokens[: L + 1], src[: L + 1]
        x = np.full(L, self.tokenizer.pad_id, np.int64)
        y = np.full(L, self.tokenizer.pad_id, np.int64)
        x[: len(tokens) - 1] = tokens[:-1]
        y[: len(tokens) - 1] = tokens[1:]
        if not self.conditions:
            return torch.from_numpy(x), torch.from_numpy(y)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(
            self._conditions(f, fid, start, src[1:], semitones, L, self._rng(2, i)))

    def _conditions(self, f: int, fid: int, start: int, src: np.ndarray, semitones: int, L: int,
                    rng: np.random.Generator) -> np.ndarray:
        """[L, n] condition codes of the targets y (src: each target's index among the tokens read)."""
        c = np.zeros((L, len(self.conditions)), np.int64)
        events = None
        if self.use_events and any(n in self.conditions for n in cond.EVENT_CONDITIONS) and len(src):
            events = self.cache.event_conditions(fid, start, start + int(src.max()) + 1)[src].astype(np.int64)
        for k, name in enumerate(self.conditions):
            if self.cond_dropout and rng.random() < self.cond_dropout:
                continue  # left at "any"
            if name in self.file_codes:
                c[:, k] = self.file_codes[name][f]
            elif events is not None:
                col = events[:, cond.EVENT_CONDITIONS.index(name)]
                move = cond.BY_NAME[name].transpose
                if move and semitones:
                    col = move(col, semitones)
                c[: len(col), k] = col
        return c

    def _augment(self, tokens: np.ndarray, rng: np.random.Generator, stretch: float):
        """Augmented tokens, each one's source index among `tokens`, and the transposition."""
        tok, a = self.tokenizer, self.augment
        src, semitones = np.arange(len(tokens)), 0
        if a.transpose:
            _, _, pitch = tok.key_events(tokens)
            notes = pitch >= 0
            if notes.any():
                lo = max(-a.transpose, PIANO_LOW - int(pitch[notes].min()))
                hi = min(a.transpose, PIANO_HIGH - int(pitch[notes].max()))
                if lo <= hi:
                    semitones = int(rng.integers(lo, hi + 1))
                    tokens = tok.transpose(tokens, semitones)
        if a.velocity:
            tokens = tok.shift_velocities(tokens, int(rng.integers(-a.velocity, a.velocity + 1)))
        if stretch != 1.0:
            tokens, src = tok.stretch(tokens, stretch, return_source=True)
        return tokens, src, semitones
