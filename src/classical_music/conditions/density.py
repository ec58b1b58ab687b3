"""The density condition's vocabulary: notes per second in log-spaced bins."""

from __future__ import annotations

import numpy as np

DENSITY_WINDOW = 5.0  # seconds around each event
# Bin centres 1, 1.4, 2, 2.8, 4, ... 32 notes/s (half-octave steps), so the requests people make
# (2, 4, 8, 16) sit at a bin's centre and a bin spans +-19 % around it.
DENSITY_CENTERS = tuple(round(2 ** (k / 2), 2) for k in range(11))
_DENSITY_EDGES = np.array([2 ** ((k + 0.5) / 2) for k in range(10)])
DENSITY_MAX = float(DENSITY_CENTERS[-1])  # 32: more is composed at this (and said so), not promised


def clamp_density(notes_per_second: float) -> float:
    """What a density request is composed at: --density 100 was reported as 32 (its bin) while
    steering pushed the piece to 70 notes/s; now both the condition and steering use 32."""
    return min(float(notes_per_second), DENSITY_MAX)


def density_label(c: float) -> str:
    return f"{c:g}"


def density_bin(notes_per_second) -> np.ndarray | int:
    """Vocabulary index (1 .. len(DENSITY_CENTERS)) of a density, or an array of them."""
    return np.searchsorted(_DENSITY_EDGES, notes_per_second, side="right") + 1


# How dense a piece's first two minutes are (onsets/s), deciles 0 .. 100 %: the shipped corpus's
# train split, one value per piece (a piece's performances averaged). Training counts windows, so
# dense pieces and pieces with many performances weigh more, and the model's own density leans
# dense (median 10.4 per file, 11 in its 120-s pieces) against 9.1 for a typical piece; a planned
# piece asked for no density draws one from here (form.resolve_plan), as it draws its key.
OPENING_DENSITY_DECILES = (1.98, 4.54, 5.72, 6.84, 7.89, 9.14, 10.26, 11.48, 13.23, 15.6, 23.32)


def draw_density(seed: int) -> float:
    """A piece's home density drawn by the seed from OPENING_DENSITY_DECILES, log-linear between
    deciles. A run's variations share it, as they share the form: variations composed together
    wait for the densest, and pieces one to twelve times as dense made a batch 1.4x slower."""
    u = np.random.default_rng([int(seed) % 2**32, 24]).random()
    q = np.log(OPENING_DENSITY_DECILES)
    return round(float(np.exp(np.interp(u * (len(q) - 1), np.arange(len(q)), q))), 2)


def density_codes(o) -> np.ndarray:
    """Each second's density code: onsets over the window, divided by the window's length inside
    the file (o: events.Onsets)."""
    from .events import window_sum

    counts = np.bincount(o.second, minlength=o.seconds).astype(np.float64)
    half = int(DENSITY_WINDOW // 2)
    return density_bin(window_sum(counts, half) / window_sum(np.ones(o.seconds), half))
