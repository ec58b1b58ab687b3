"""The density condition's vocabulary: notes per second in log-spaced bins."""

from __future__ import annotations

import math

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


# How dense pieces open: a checkpoint's config.json may carry an "opening_density" block, the
# deciles (0 .. 100 %) of its training music's onsets/s over each piece's first OPENING_SECONDS,
# one value per piece (a piece's performances averaged). A planned piece asked for no density
# draws one from it (form.resolve_plan), as it draws its key. Why not the model's own: training
# counts windows, so dense pieces and pieces with many performances weigh more, and the shipped
# model composed 120-s pieces at ~11 notes/s against 9.1 for its corpus's typical piece (per file
# 10.4). `finetune` writes its folder's; the shipped model's is its train split's
# (recipes/training_corpus.py); a checkpoint without one composes at its own pace.
OPENING_SECONDS = 120.0
OPENING_KEY = "opening_density"


def opening_density(onsets: np.ndarray) -> float | None:
    """Onsets per second over a piece's first OPENING_SECONDS (its length when shorter); None for a
    piece too short to say (under 5 s)."""
    onsets = np.sort(np.asarray(onsets, np.float64))
    if len(onsets) == 0:
        return None
    t = onsets - onsets[0]
    span = min(OPENING_SECONDS, float(t[-1]))
    if span < 5.0:
        return None
    return float(np.count_nonzero(t < OPENING_SECONDS) / span)


def opening_block(per_piece: dict[str, list[float]], source: str) -> dict | None:
    """The config.json block from each piece's files' opening densities (None: fewer than 2 pieces)."""
    values = [float(np.mean(v)) for v in per_piece.values() if v]
    if len(values) < 2:
        return None
    deciles = np.percentile(values, np.arange(0, 101, 10))
    return {"deciles": [round(float(d), 2) for d in deciles], "pieces": len(values), "seconds": OPENING_SECONDS,
            "source": source}


def model_deciles(model) -> tuple | None:
    """The checkpoint's opening-density deciles, or None (none stored, or not 11 increasing numbers)."""
    block = (getattr(model, "checkpoint_config", None) or {}).get(OPENING_KEY)
    d = block.get("deciles") if isinstance(block, dict) else None
    if (not isinstance(d, list) or len(d) != 11
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1000 for x in d)
            or any(b < a for a, b in zip(d, d[1:]))):
        return None
    return tuple(float(x) for x in d)


GOLDEN = (math.sqrt(5) - 1) / 2


def draw_density(seed: int, deciles) -> float:
    """A piece's home density drawn by the seed from these deciles, log-linear between them. A
    run's variations share it, as they share the form: variations composed together wait for the
    densest, and pieces one to twelve times as dense made a batch 1.4x slower. Seeds step through
    the deciles by the golden ratio (a Weyl sequence) rather than at random, so that a few
    consecutive seeds already spread over slow and fast pieces: four random draws (seeds 2300-2303)
    gave 7.4, 4.9, 12.5 and 4.8 notes/s, and 32 pieces from them an overlap with real music of 0.841."""
    u = ((int(seed) % 2**32) * GOLDEN + 0.5) % 1.0  # any seed (the CLI takes any integer) within float precision
    q = np.log(np.asarray(deciles, np.float64))
    return round(float(np.exp(np.interp(u * (len(q) - 1), np.arange(len(q)), q))), 2)


def density_codes(o) -> np.ndarray:
    """Each second's density code: onsets over the window, divided by the window's length inside
    the file (o: events.Onsets)."""
    from .events import window_sum

    counts = np.bincount(o.second, minlength=o.seconds).astype(np.float64)
    half = int(DENSITY_WINDOW // 2)
    return density_bin(window_sum(counts, half) / window_sum(np.ones(o.seconds), half))
