"""The density condition's vocabulary: notes per second in log-spaced bins."""

from __future__ import annotations

import numpy as np

DENSITY_WINDOW = 5.0  # seconds around each event
# Bin centres 1, 1.4, 2, 2.8, 4, ... 32 notes/s (half-octave steps), so the requests people make
# (2, 4, 8, 16) sit at a bin's centre and a bin spans +-19 % around it.
DENSITY_CENTERS = tuple(round(2 ** (k / 2), 2) for k in range(11))
_DENSITY_EDGES = np.array([2 ** ((k + 0.5) / 2) for k in range(10)])


def density_label(c: float) -> str:
    return f"{c:g}"


def density_bin(notes_per_second) -> np.ndarray | int:
    """Vocabulary index (1 .. len(DENSITY_CENTERS)) of a density, or an array of them."""
    return np.searchsorted(_DENSITY_EDGES, notes_per_second, side="right") + 1



def density_codes(o) -> np.ndarray:
    """Each second's density code: onsets over the window, divided by the window's length inside
    the file (o: events.Onsets)."""
    from .events import window_sum

    counts = np.bincount(o.second, minlength=o.seconds).astype(np.float64)
    half = int(DENSITY_WINDOW // 2)
    return density_bin(window_sum(counts, half) / window_sum(np.ones(o.seconds), half))
