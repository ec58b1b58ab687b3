"""The statistics of `classical-music compare`: how close is a set of pieces to another set?

Objective evaluation in the manner of Yang & Lerch, "On the evaluation of generative models in
music" (Neural Computing and Applications, 2018): for each musical feature, pool its values over
every piece of a set, smooth the two distributions with a Gaussian kernel density estimate on one
shared grid, and report

* overlap area (OA) = integral of min(p_generated, p_reference): 1 for identical distributions,
  0 for disjoint ones, symmetric;
* KL divergence KL(reference || generated) in nats: how badly the generated distribution misses
  mass the reference has (it punishes a model that never plays what the reference plays more than
  one that adds a little extra). A small epsilon keeps it finite for disjoint sets (about 23 nats).

Features (all notes are taken after the sustain pedal is folded into their lengths):

==============  ==========================================================================
pitch_class     pitch % 12 of every note (12 categories, plain histogram, no smoothing)
pitch           MIDI pitch of every note
ioi             inter-onset interval: gap between successive onsets, seconds; gaps under
                10 ms are dropped (notes of one chord, or a rolled chord in a performance)
duration        offset - onset of every note after pedal folding, seconds
velocity        MIDI velocity of every note
note_density    onsets per second in consecutive 2-second windows from the first onset
                (trailing partial window dropped; a piece shorter than one window gives one value)
polyphony       notes sounding at once, sampled on a 50 ms time grid from the first onset to
                the last offset (time-weighted: silences count as 0, a spread chord counts once)
==============  ==========================================================================

ioi and duration are estimated on log10(seconds): OA and KL are unchanged by a monotone change of
variable, and the log axis turns their long tails into well-behaved bumps a kernel can fit.
Kernel bandwidth: Silverman's rule of thumb, 0.9 * min(sd, IQR / 1.34) * n^(-1/5), per set and per
feature, floored at the feature's resolution (1 semitone, 1 velocity step, ...) so a set with one
constant value still gives a bump instead of a spike. Densities come from linear binning onto a
1024-point grid and a discrete convolution (binned KDE), so millions of notes take milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..notes import MidiReadError, Notes, has_drums_only, load_score, score_to_notes

FEATURE_NAMES = ("pitch_class", "pitch", "ioi", "duration", "velocity", "note_density", "polyphony")

CHORD_SECONDS = 0.010  # onsets closer than this are one event for IOI
ONSET_RATE_WINDOW = 2.0  # seconds per note-density window
POLYPHONY_STEP = 0.050  # seconds between polyphony samples
MIN_SECONDS = 0.001  # floor before log10 (a note cut to zero by a re-strike)
GRID_SIZE = 1024
KL_EPSILON = 1e-10


@dataclass(frozen=True)
class Feature:
    name: str
    label: str  # x-axis label in the report
    categories: int = 0  # > 0: values are 0..categories-1 compared as a plain histogram
    log: bool = False  # estimate the density on log10 of the values
    min_bandwidth: float = 0.0  # in the estimation domain (decades when log)
    description: str = ""


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("pitch_class", "pitch class", categories=12,
                description="pitch % 12 of every note, 12-bin histogram"),
        Feature("pitch", "MIDI pitch", min_bandwidth=1.0, description="MIDI pitch of every note"),
        Feature("ioi", "inter-onset interval (s, log scale)", log=True, min_bandwidth=0.02,
                description="seconds between successive onsets, gaps < 10 ms dropped; KDE on log10"),
        Feature("duration", "note duration after pedal (s, log scale)", log=True, min_bandwidth=0.02,
                description="offset - onset after sustain-pedal folding; KDE on log10"),
        Feature("velocity", "MIDI velocity", min_bandwidth=1.0, description="MIDI velocity of every note"),
        Feature("note_density", "onsets per second (2 s windows)", min_bandwidth=0.25,
                description="onsets per second in consecutive 2 s windows"),
        Feature("polyphony", "notes sounding (sampled every 50 ms)", min_bandwidth=0.5,
                description="notes sounding at once, sampled on a 50 ms grid (silence = 0)"),
    )
}


# ---------------------------------------------------------------------------------------------
# Notes and features


def load_notes(path: str | Path) -> Notes:
    """Non-drum notes of a MIDI file in seconds, sorted by onset, sustain pedal folded into offsets.

    Raises MidiReadError (its message is the skip reason) for unreadable, malformed or note-less files.
    """
    score = load_score(path)
    notes = score_to_notes(score)
    if len(notes) == 0:
        raise MidiReadError("drum tracks only" if has_drums_only(score) else "no notes")
    return notes


def _ioi(onset: np.ndarray) -> np.ndarray:
    gaps = np.diff(onset)
    return gaps[gaps >= CHORD_SECONDS].astype(np.float32)


def _note_density(onset: np.ndarray, offset: np.ndarray) -> np.ndarray:
    start = onset[0]
    span = float(offset.max() - start)
    windows = int(span // ONSET_RATE_WINDOW)
    if windows < 1:
        # a blip of a piece still has a rate; 50 ms floor keeps one-instant chords finite
        return np.array([len(onset) / max(span, POLYPHONY_STEP)], np.float32)
    idx = ((onset - start) // ONSET_RATE_WINDOW).astype(np.int64)
    counts = np.bincount(idx[idx < windows], minlength=windows)
    return (counts / ONSET_RATE_WINDOW).astype(np.float32)


def _polyphony(onset: np.ndarray, offset: np.ndarray) -> np.ndarray:
    t = onset[0] + np.arange(0.0, float(offset.max() - onset[0]), POLYPHONY_STEP)
    if len(t) == 0:
        t = onset[:1]
    started = np.searchsorted(onset, t, side="right")
    ended = np.searchsorted(np.sort(offset), t, side="right")
    return (started - ended).astype(np.int16)


def piece_features(notes: Notes) -> dict[str, np.ndarray]:
    """Feature values of one piece (see the module docstring for the definitions)."""
    if len(notes) == 0:
        return {name: np.zeros(0, np.float32) for name in FEATURE_NAMES}
    n = notes.sorted()
    pitch = n.pitch.astype(np.int16)
    return {
        "pitch_class": (pitch % 12).astype(np.int8),
        "pitch": pitch,
        "ioi": _ioi(n.onset),
        "duration": np.maximum(n.offset - n.onset, 0.0).astype(np.float32),
        "velocity": n.velocity.astype(np.int16),
        "note_density": _note_density(n.onset, n.offset),
        "polyphony": _polyphony(n.onset, n.offset),
    }


def features(notes_list: Iterable[Notes]) -> dict[str, np.ndarray]:
    """Feature values pooled over pieces (long pieces weigh more, as in any pooled statistic)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FEATURE_NAMES}
    for notes in notes_list:
        for name, values in piece_features(notes).items():
            parts[name].append(values)
    return {name: np.concatenate(v) if v else np.zeros(0, np.float32) for name, v in parts.items()}


# ---------------------------------------------------------------------------------------------
# Smoothed distributions, OA and KL


def silverman_bandwidth(values: np.ndarray) -> float:
    """0.9 * min(sd, IQR/1.34) * n^(-1/5); robust to heavy tails, 0 for a constant sample."""
    n = len(values)
    if n < 2:
        return 0.0
    sd = float(np.std(values, ddof=1))
    q25, q75 = np.percentile(values, [25, 75])
    spread = min(sd, (q75 - q25) / 1.34) if q75 > q25 else sd
    return 0.9 * spread * n ** -0.2


@dataclass
class Distributions:
    """Two distributions as probability masses on one shared grid (domain values, log10 if log)."""
    x: np.ndarray
    p: np.ndarray  # first sample
    q: np.ndarray  # second sample
    step: float  # grid spacing (1 for categories): density = mass / step
    bandwidth: tuple[float, float] = (0.0, 0.0)


def _prepare(values, feature: Feature) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return np.log10(np.maximum(v, MIN_SECONDS)) if feature.log else v


def _binned_kde(v: np.ndarray, x0: float, step: float, size: int, h: float) -> np.ndarray:
    mass = np.zeros(size)
    for start in range(0, len(v), 1 << 20):  # chunks bound the temporaries for corpus-sized sets
        pos = (v[start:start + (1 << 20)] - x0) / step
        i = np.clip(np.floor(pos).astype(np.int64), 0, size - 2)
        frac = np.clip(pos - i, 0.0, 1.0)
        mass += np.bincount(i, 1.0 - frac, size) + np.bincount(i + 1, frac, size)
    # 4 bandwidths hold all but 6e-5 of a Gaussian; the grid margin guarantees 2L+1 <= size.
    # Under step/8 the kernel is a spike (neighbours weigh < e^-32), and squaring step/h overflows.
    half = min(int(math.ceil(4 * h / step)), (size - 1) // 2) if h > step / 8 else 0
    if half > 0:
        k = np.exp(-0.5 * (np.arange(-half, half + 1) * step / h) ** 2)
        mass = np.convolve(mass, k, mode="same")
    return mass / mass.sum()


def distributions(a, b, feature: str | Feature | None = None, *, grid_size: int = GRID_SIZE,
                  bandwidth: float | None = None) -> Distributions:
    """Smoothed distributions of samples a and b on a shared grid.

    feature picks the treatment (categories, log10 domain, bandwidth floor); None means a plain
    continuous Gaussian KDE. bandwidth overrides Silverman's rule for both samples.
    """
    spec = FEATURES[feature] if isinstance(feature, str) else (feature or Feature("values", "value"))
    a, b = _prepare(a, spec), _prepare(b, spec)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both samples need at least one value")
    if spec.categories:
        k = spec.categories
        p = np.bincount(np.clip(a.astype(np.int64), 0, k - 1), minlength=k) / len(a)
        q = np.bincount(np.clip(b.astype(np.int64), 0, k - 1), minlength=k) / len(b)
        return Distributions(np.arange(k, dtype=np.float64), p, q, 1.0)
    if bandwidth is None:
        ha = max(silverman_bandwidth(a), spec.min_bandwidth)
        hb = max(silverman_bandwidth(b), spec.min_bandwidth)
    else:
        ha = hb = float(bandwidth)
    lo = min(a.min(), b.min()) - 4 * max(ha, hb)
    hi = max(a.max(), b.max()) + 4 * max(ha, hb)
    # both samples one constant (or a few ulps apart: 0 and 5e-324 gave a zero step) and no floor:
    # a single shared spike
    if not (hi - lo) / (grid_size - 1) > 1e-12 * max(1.0, abs(lo), abs(hi)):
        mid = lo + (hi - lo) / 2
        lo, hi = mid - 0.5, mid + 0.5
    x = np.linspace(lo, hi, grid_size)
    step = float(x[1] - x[0])
    p = _binned_kde(a, lo, step, grid_size, ha)
    q = _binned_kde(b, lo, step, grid_size, hb)
    return Distributions(x, p, q, step, (ha, hb))


def _oa(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.minimum(p, q).sum())


def _kl(p: np.ndarray, q: np.ndarray, eps: float = KL_EPSILON) -> float:
    p = (p + eps) / (p + eps).sum()
    q = (q + eps) / (q + eps).sum()
    return float(max(np.sum(p * np.log(p / q)), 0.0))  # clamp rounding noise below zero


def overlap_area(a, b, feature: str | Feature | None = None, **options) -> float:
    """Overlap area of the smoothed distributions of samples a and b: 1 identical, 0 disjoint."""
    d = distributions(a, b, feature, **options)
    return _oa(d.p, d.q)


def kl_divergence(a, b, feature: str | Feature | None = None, eps: float = KL_EPSILON, **options) -> float:
    """KL(a || b) in nats between the smoothed distributions of samples a and b.

    Order matters: compare_sets passes (reference, generated). Masses on the grid get eps added,
    so the result stays finite (about 23 nats at most with 1024 grid points).
    """
    d = distributions(a, b, feature, **options)
    return _kl(d.p, d.q, eps)
