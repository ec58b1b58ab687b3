"""Training windows drawn from the cache: X = events[i:i+L], y = events[i+1:i+L+1].

Each file is cut into ceil((n-1)/L) windows; every epoch shifts the cut points by a random
offset, so the model sees new boundaries without the dataset ever holding the corpus in RAM.
Augmentation (Performance tokenizer) works on the tokens directly: transpose, time stretch and
velocity shift, drawn from an RNG seeded by (seed, epoch, index) so it is reproducible anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

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
                 seed: int = 0):
        self.cache = cache_dir if isinstance(cache_dir, Cache) else Cache(cache_dir)
        self.tokenizer = self.cache.tokenizer
        self.split = split
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.epoch = 0
        self.augment = augment if augment is not None and augment.active else None
        if self.augment and self.tokenizer.name != "performance":
            self.augment = None  # token-level augmentation is defined on performance events only
        ids = self.cache.files(split)
        self.file_ids = ids[self.cache.length[ids] >= 2]
        self.lengths = self.cache.length[self.file_ids]
        per_file = np.maximum(1, -(-(self.lengths - 1) // self.seq_len))
        self.cum = np.cumsum(per_file)

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
        tokens = self.cache.tokens(int(self.file_ids[f]), start, start + need).astype(np.int64)
        if self.augment:
            tokens = self._augment(tokens, rng, stretch)
        tokens = tokens[: L + 1]
        x = np.full(L, self.tokenizer.pad_id, np.int64)
        y = np.full(L, self.tokenizer.pad_id, np.int64)
        x[: len(tokens) - 1] = tokens[:-1]
        y[: len(tokens) - 1] = tokens[1:]
        return torch.from_numpy(x), torch.from_numpy(y)

    def _augment(self, tokens: np.ndarray, rng: np.random.Generator, stretch: float) -> np.ndarray:
        tok, a = self.tokenizer, self.augment
        if a.transpose:
            is_on = (tokens >= tok.note_on) & (tokens < tok.note_off)
            is_off = (tokens >= tok.note_off) & (tokens < tok.time_shift)
            pitch = np.where(is_on, tokens - tok.note_on, tokens - tok.note_off)
            notes = is_on | is_off
            if notes.any():
                lo = max(-a.transpose, PIANO_LOW - int(pitch[notes].min()))
                hi = min(a.transpose, PIANO_HIGH - int(pitch[notes].max()))
                if lo <= hi:
                    tokens = tokens + np.where(notes, int(rng.integers(lo, hi + 1)), 0)
        if a.velocity:
            is_vel = (tokens >= tok.velocity) & (tokens < tok.vocab_size)
            shift = int(rng.integers(-a.velocity, a.velocity + 1))
            tokens = np.where(is_vel, np.clip(tokens + shift, tok.velocity, tok.vocab_size - 1), tokens)
        if stretch != 1.0:
            tokens = stretch_shifts(tokens, tok, stretch)
        return tokens


def stretch_shifts(tokens: np.ndarray, tok, factor: float) -> np.ndarray:
    """Scale every run of TIME_SHIFT tokens by `factor`, re-emitting the run with the fewest tokens."""
    steps = tok.shift_steps(tokens)
    out: list[int] = []
    run = 0.0
    for t, s in zip(tokens.tolist(), steps.tolist()):
        if s:
            run += s
            continue
        if run:
            out.extend(_shift_tokens(tok, int(round(run * factor))))
            run = 0.0
        out.append(t)
    if run:
        out.extend(_shift_tokens(tok, int(round(run * factor))))
    return np.array(out, np.int64)


def _shift_tokens(tok, steps: int) -> list[int]:
    full, rest = divmod(max(steps, 0), tok.max_shift_steps)
    return [tok.time_shift + tok.max_shift_steps - 1] * full + ([tok.time_shift + rest - 1] if rest else [])
