"""`classical-music compare GENERATED REFERENCE`: how close is a set of pieces to another set?

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

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import UserError
from .files import write_text
from .notes import MidiReadError, Notes, has_drums_only, load_score, score_to_notes

FEATURE_NAMES = ("pitch_class", "pitch", "ioi", "duration", "velocity", "note_density", "polyphony")

CHORD_SECONDS = 0.010  # onsets closer than this are one event for IOI
DENSITY_WINDOW = 2.0  # seconds per note-density window
POLYPHONY_STEP = 0.050  # seconds between polyphony samples
MIN_SECONDS = 0.001  # floor before log10 (a note cut to zero by a re-strike)
GRID_SIZE = 1024
KL_EPSILON = 1e-10
PROGRESS_MIN_FILES = 20  # below this a bar is just noise
ROLL_PIECES = 3
ROLL_SECONDS = 30.0

GENERATED_COLOR = "#e66101"
REFERENCE_COLOR = "#2c7bb6"
PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


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
    windows = int(span // DENSITY_WINDOW)
    if windows < 1:
        # a blip of a piece still has a rate; 50 ms floor keeps one-instant chords finite
        return np.array([len(onset) / max(span, POLYPHONY_STEP)], np.float32)
    idx = ((onset - start) // DENSITY_WINDOW).astype(np.int64)
    counts = np.bincount(idx[idx < windows], minlength=windows)
    return (counts / DENSITY_WINDOW).astype(np.float32)


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
    if hi <= lo:  # both samples one identical constant and no floor: a single shared spike
        lo, hi = lo - 0.5, hi + 0.5
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


# ---------------------------------------------------------------------------------------------
# Sets of pieces


@dataclass
class PieceSet:
    label: str
    roots: list[str]
    files: list[Path] = field(default_factory=list)  # usable files, in walk order
    skipped: list[dict] = field(default_factory=list)
    notes: int = 0
    seconds: float = 0.0
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "paths": self.roots,
            "files": len(self.files),
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
        }


def _as_list(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _midi_files(root: Path) -> list[Path]:
    from .data.sources import walk_midi

    if root.is_file():
        return [root]  # named explicitly: let the header check judge it, whatever the suffix
    return list(walk_midi(root))


def load_set(paths, label: str, progress: bool = False) -> PieceSet:
    """Features of every usable MIDI file under paths (files or folders); bad files land in skipped."""
    roots = _as_list(paths)
    for root in roots:
        if not root.exists():
            raise UserError(f"{label}: no such file or folder: {root}")
    files = [f for root in roots for f in _midi_files(root)]
    ps = PieceSet(label, [str(r) for r in roots])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FEATURE_NAMES}
    from tqdm import tqdm

    bar = tqdm(files, desc=label, unit="file", disable=not progress or len(files) < PROGRESS_MIN_FILES)
    for path in bar:
        try:
            notes = load_notes(path)
            values = piece_features(notes)
        except MidiReadError as e:
            ps.skipped.append({"path": str(path), "reason": str(e)})
            continue
        except MemoryError:
            ps.skipped.append({"path": str(path), "reason": "too large"})
            continue
        except Exception as e:  # one odd file must not sink a comparison of hundreds
            ps.skipped.append({"path": str(path), "reason": f"failed: {type(e).__name__}: {e}"[:300]})
            continue
        ps.files.append(path)
        ps.notes += len(notes)
        ps.seconds += float(notes.offset.max() - notes.onset.min())
        for name, v in values.items():
            parts[name].append(v)
    if not ps.files:
        where = ", ".join(ps.roots)
        if not files:
            raise UserError(f"{label}: no .mid/.midi files in {where}")
        first = ps.skipped[0]
        raise UserError(f"{label}: no usable MIDI file in {where} ({len(ps.skipped)} skipped, "
                        f"e.g. {Path(first['path']).name}: {first['reason']})")
    ps.values = {name: np.concatenate(v) for name, v in parts.items()}
    return ps


def _stats(values: np.ndarray, feature: Feature) -> dict:
    if len(values) == 0:
        return {"n": 0}
    if feature.categories:
        hist = np.bincount(values.astype(np.int64), minlength=feature.categories) / len(values)
        return {"n": int(len(values)), "histogram": [round(float(x), 6) for x in hist]}
    v = values.astype(np.float64)
    return {"n": int(len(v)), "mean": round(float(v.mean()), 6), "std": round(float(v.std()), 6),
            "median": round(float(np.median(v)), 6)}


def compare_piece_sets(gen: PieceSet, ref: PieceSet) -> tuple[dict, dict[str, Distributions]]:
    """The JSON-ready result and the distributions behind it (p = generated, q = reference)."""
    out_features: dict[str, dict] = {}
    dists: dict[str, Distributions] = {}
    for name in FEATURE_NAMES:
        spec = FEATURES[name]
        g, r = gen.values[name], ref.values[name]
        entry: dict = {"overlap_area": None, "kl": None}
        if len(g) and len(r):
            d = distributions(g, r, spec)
            dists[name] = d
            entry["overlap_area"] = round(_oa(d.p, d.q), 6)
            entry["kl"] = round(_kl(d.q, d.p), 6)  # reference || generated
            if not spec.categories:
                entry["bandwidth"] = {"generated": round(d.bandwidth[0], 6), "reference": round(d.bandwidth[1], 6),
                                      "domain": "log10 seconds" if spec.log else "value"}
        entry["generated"] = _stats(g, spec)
        entry["reference"] = _stats(r, spec)
        out_features[name] = entry
    oas = [f["overlap_area"] for f in out_features.values() if f["overlap_area"] is not None]
    kls = [f["kl"] for f in out_features.values() if f["kl"] is not None]
    result = {
        "features": out_features,
        "mean_overlap_area": round(float(np.mean(oas)), 6) if oas else None,
        "mean_kl": round(float(np.mean(kls)), 6) if kls else None,
        "generated": gen.summary(),
        "reference": ref.summary(),
        "method": {
            "overlap_area": "integral of min(p_generated, p_reference) of Gaussian KDEs on a shared grid",
            "kl": "KL(reference || generated) in nats, epsilon 1e-10 per grid point",
            "bandwidth": "Silverman's rule per set, floored at the feature resolution",
            "pedal": "note offsets extended while the sustain pedal (CC64 >= 64) is down",
            "features": {name: f.description for name, f in FEATURES.items()},
            "reference": "Yang & Lerch, On the evaluation of generative models in music, 2018",
        },
    }
    return result, dists


def compare_sets(generated_paths, reference_paths, progress: bool = False) -> dict:
    """Compare two sets of MIDI files (each a file, a folder, or a list of them); see the module doc."""
    gen = load_set(generated_paths, "generated", progress)
    ref = load_set(reference_paths, "reference", progress)
    return compare_piece_sets(gen, ref)[0]


# ---------------------------------------------------------------------------------------------
# Output


def _atomic_write(path: Path, data: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, data)


def format_table(result: dict) -> str:
    def num(x):
        return "     n/a" if x is None else f"{x:8.3f}"

    lines = [f"{'feature':<14}{'OA':>8}  {'KL(ref||gen)':>12}"]
    for name, f in result["features"].items():
        lines.append(f"{name:<14}{num(f['overlap_area'])}  {num(f['kl']):>12}")
    lines.append(f"{'mean':<14}{num(result['mean_overlap_area'])}  {num(result.get('mean_kl')):>12}")
    return "\n".join(lines)


def _new_figure(width: float, height: float):
    # Figure without pyplot: no global state, no GUI backend; rendered by Agg in _png
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pitch_name(p: int) -> str:
    return f"{PITCH_CLASS_NAMES[p % 12]}{p // 12 - 1}"


def _feature_figure(name: str, d: Distributions, entry: dict, gen: PieceSet, ref: PieceSet):
    spec = FEATURES[name]
    fig = _new_figure(6.2, 3.3)
    ax = fig.add_subplot()
    gl = f"generated ({gen.values[name].size:,} values)"
    rl = f"reference ({ref.values[name].size:,} values)"
    title = f"{name}: OA {entry['overlap_area']:.3f}, KL(ref||gen) {entry['kl']:.3f}"
    if spec.categories:
        x = np.arange(spec.categories)
        w = 0.4
        ax.bar(x - w / 2, d.p, w, color=GENERATED_COLOR, alpha=0.85, label=gl)
        ax.bar(x + w / 2, d.q, w, color=REFERENCE_COLOR, alpha=0.85, label=rl)
        ax.set_xticks(x, PITCH_CLASS_NAMES)
        ax.set_ylabel("share of notes")
    else:
        x = 10 ** d.x if spec.log else d.x
        pg, pr = d.p / d.step, d.q / d.step
        ax.fill_between(x, np.minimum(pg, pr), color="0.6", alpha=0.35, lw=0, label="overlap")
        ax.plot(x, pg, color=GENERATED_COLOR, lw=2, label=gl)
        ax.plot(x, pr, color=REFERENCE_COLOR, lw=2, label=rl)
        # Histograms in the same domain as the KDE, so the curves can be checked against raw data.
        lo, hi = d.x[0], d.x[-1]
        bins = (np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5) if name in ("pitch", "velocity", "polyphony")
                else np.linspace(lo, hi, 80))
        for values, color in ((gen.values[name], GENERATED_COLOR), (ref.values[name], REFERENCE_COLOR)):
            v = _prepare(values, spec)
            h, edges = np.histogram(v, bins=bins, density=True)
            ex = 10 ** edges if spec.log else edges
            ax.stairs(h, ex, color=color, alpha=0.35, lw=1)
        if spec.log:
            ax.set_xscale("log")
            ax.set_ylabel("density per decade")
        else:
            ax.set_ylabel("density")
        # View the central 99.8% of the pooled mass: rare long rests or re-struck stubs would
        # otherwise squeeze the interesting part of the axis.
        cdf = np.cumsum((d.p + d.q) / 2)
        first = max(int(np.searchsorted(cdf, 0.001)) - 1, 0)
        last = min(int(np.searchsorted(cdf, 0.999)) + 1, len(x) - 1)
        ax.set_xlim(x[first], x[last])
        if name == "pitch":
            lo_c, hi_c = int(x[first] // 12 + 1) * 12, int(x[last])
            ticks = list(range(lo_c, hi_c + 1, 12))
            ax.set_xticks(ticks, [f"{_pitch_name(t)}\n{t}" for t in ticks])
        ax.set_ylim(bottom=0)
    ax.set_xlabel(spec.label)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return fig


def _draw_roll(ax, notes: Notes, title: str, max_seconds: float) -> None:
    """A minimal piano roll (used when classical_music.plot is not available)."""
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection

    keep = notes.onset < notes.onset.min() + max_seconds
    on, off = notes.onset[keep], np.minimum(notes.offset[keep], notes.onset.min() + max_seconds)
    p, v = notes.pitch[keep].astype(float), notes.velocity[keep].astype(float)
    verts = np.stack([np.stack([on, p - 0.4], 1), np.stack([off, p - 0.4], 1),
                      np.stack([off, p + 0.4], 1), np.stack([on, p + 0.4], 1)], 1)
    rects = PolyCollection(verts, cmap=colormaps["viridis"], edgecolors="none")
    rects.set_array(v)
    rects.set_clim(1, 127)
    ax.add_collection(rects)
    ax.figure.colorbar(rects, ax=ax, label="velocity", pad=0.01, aspect=12)
    ax.set_xlim(on.min(), max(off.max(), on.min() + 1))
    ax.set_ylim(p.min() - 2, p.max() + 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.2)


def _pick(files: list[Path], k: int) -> list[Path]:
    # spread over the set rather than the first k, which often are one composer or one model run
    if len(files) <= k:
        return list(files)
    return [files[i] for i in np.linspace(0, len(files) - 1, k).round().astype(int)]


def _short_name(path: Path, roots: list[str]) -> str:
    # relative to its set folder: performance corpora reuse file names across pieces
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if str(rel) != ".":
            return rel.as_posix()
    return path.name


def _rolls_figure(ps: PieceSet, color: str):
    try:
        from .plot import piano_roll
    except ImportError:
        piano_roll = None
    chosen = _pick(ps.files, ROLL_PIECES)
    fig = _new_figure(10, 2.6 * len(chosen))
    axes = fig.subplots(len(chosen), 1, squeeze=False)[:, 0]
    for ax, path in zip(axes, chosen):
        title = f"{ps.label}: {_short_name(path, ps.roots)} (first {ROLL_SECONDS:.0f} s)"
        if piano_roll is not None:
            piano_roll(str(path), ax=ax, title=title, max_seconds=ROLL_SECONDS)
        else:
            _draw_roll(ax, load_notes(path), title, ROLL_SECONDS)
        for side in ("left", "right", "top", "bottom"):
            ax.spines[side].set_color(color)
            ax.spines[side].set_linewidth(2)
    return fig


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1320px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.gen{color:#e66101;font-weight:600}.ref{color:#2c7bb6;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:12px}
img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:1px 4px}
.note{color:#555;font-size:.92em;max-width:900px}details{margin:6px 0}
"""


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def render_report(result: dict, dists: dict[str, Distributions], gen: PieceSet, ref: PieceSet) -> str:
    """One self-contained HTML page: set summary, numbers, distribution plots, piano rolls."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>compare: generated vs reference</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>Generated vs reference</h1>",
             f"<p>Mean overlap area <b>{_fmt(result['mean_overlap_area'])}</b> "
             f"(1 = indistinguishable distributions, 0 = disjoint); mean KL(reference&nbsp;||&nbsp;generated) "
             f"<b>{_fmt(result.get('mean_kl'))}</b> nats.</p>",
             "<h2>Sets</h2><table><tr><th>set</th><th>paths</th><th>files used</th><th>skipped</th>"
             "<th>notes</th><th>music (min)</th></tr>"]
    for ps, cls in ((gen, "gen"), (ref, "ref")):
        parts.append(f"<tr><td class='{cls}'>{ps.label}</td><td>{e(', '.join(ps.roots))}</td>"
                     f"<td>{len(ps.files):,}</td><td>{len(ps.skipped):,}</td><td>{ps.notes:,}</td>"
                     f"<td>{ps.seconds / 60:.1f}</td></tr>")
    parts.append("</table>")
    for ps in (gen, ref):
        if ps.skipped:
            items = "".join(f"<li><code>{e(s['path'])}</code>: {e(s['reason'])}</li>" for s in ps.skipped[:200])
            more = f"<li>... and {len(ps.skipped) - 200} more</li>" if len(ps.skipped) > 200 else ""
            parts.append(f"<details><summary>{len(ps.skipped)} skipped {ps.label} files</summary>"
                         f"<ul>{items}{more}</ul></details>")

    parts.append("<h2>Numbers</h2><table><tr><th>feature</th><th>overlap area</th><th>KL(ref||gen)</th>"
                 "<th class='gen'>generated</th><th class='ref'>reference</th>"
                 "<th>definition</th></tr>")
    for name, f in result["features"].items():
        def ms(s, log=FEATURES[name].log):
            if "mean" not in s:
                return "—"
            # long-tailed times read better as a median than as mean ± sd
            return f"median {s['median']:.3g} s" if log else f"{s['mean']:.3g} ± {s['std']:.3g}"
        parts.append(f"<tr><td>{name}</td><td>{_fmt(f['overlap_area'])}</td><td>{_fmt(f['kl'])}</td>"
                     f"<td>{ms(f['generated'])}</td><td>{ms(f['reference'])}</td>"
                     f"<td style='text-align:left'>{e(FEATURES[name].description)}</td></tr>")
    parts.append(f"<tr><th>mean</th><th>{_fmt(result['mean_overlap_area'])}</th>"
                 f"<th>{_fmt(result.get('mean_kl'))}</th><th></th><th></th><th></th></tr></table>")

    parts.append("<h2>Distributions</h2><div class='grid'>")
    for name, d in dists.items():
        fig = _feature_figure(name, d, result["features"][name], gen, ref)
        parts.append(f"<img alt='{name} distributions' src='data:image/png;base64,{_png(fig)}'>")
    parts.append("</div>")

    parts.append("<h2>Piano rolls</h2><p class='note'>Up to three pieces from each set, spread over the "
                 "set, first 30 seconds, notes after pedal folding.</p>")
    for ps, color in ((gen, GENERATED_COLOR), (ref, REFERENCE_COLOR)):
        fig = _rolls_figure(ps, color)
        parts.append(f"<img alt='{ps.label} piano rolls' src='data:image/png;base64,{_png(fig)}'>")

    parts.append(
        "<h2>Method</h2><p class='note'>Each feature is pooled over all notes (or time samples) of a set. "
        "Its distribution is a Gaussian kernel density estimate (bandwidth: Silverman's rule per set, "
        "floored at the feature resolution) on a grid shared by both sets; pitch class is a plain "
        "12-bin histogram. Inter-onset intervals and durations are estimated on log10 seconds, which "
        "leaves overlap and KL unchanged. Overlap area = ∫ min(p<sub>gen</sub>, p<sub>ref</sub>); "
        "KL is KL(reference || generated) in nats with a 1e-10 floor per grid point, so it grows when "
        "the generated set misses what the reference plays. Sustain pedal (CC64 ≥ 64) is folded into "
        "note lengths. After Yang &amp; Lerch, <i>On the evaluation of generative models in music</i>, "
        "2018.</p></body></html>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# CLI


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the musical statistics of generated pieces with a reference set",
        description="Pool pitch class, pitch, inter-onset interval, duration, velocity, note density and "
        "polyphony over each set, smooth them with a Gaussian KDE and print the overlap area (1 = same, "
        "0 = disjoint) and KL(reference || generated) per feature (Yang & Lerch 2018).",
    )
    p.add_argument("generated", type=Path, metavar="GENERATED", help="a MIDI file or a folder (searched recursively)")
    p.add_argument("reference", type=Path, metavar="REFERENCE", help="a MIDI file or a folder (searched recursively)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write all numbers as JSON")
    p.add_argument("--report", type=Path, default=None, metavar="OUT.html",
                   help="write a self-contained HTML page with plots and piano rolls")
    p.add_argument("--no-progress", "--no_progress", dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args) -> int:
    for out, suffix in ((args.json, "--json"), (args.report, "--report")):
        if out is not None and out.is_dir():
            raise UserError(f"{suffix} {out} is a folder; give a file name")
    gen = load_set(args.generated, "generated", not args.no_progress)
    ref = load_set(args.reference, "reference", not args.no_progress)
    result, dists = compare_piece_sets(gen, ref)
    if args.json is not None:
        _atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    if args.report is not None:
        _atomic_write(args.report, render_report(result, dists, gen, ref))
    for ps in (gen, ref):
        line = f"{ps.label}: {len(ps.files)} files, {ps.notes:,} notes, {ps.seconds / 60:.1f} min"
        if ps.skipped:
            line += f", {len(ps.skipped)} skipped"
            line += " (see --json)" if len(ps.skipped) > 3 else ": " + "; ".join(
                f"{Path(s['path']).name}: {s['reason']}" for s in ps.skipped)
        print(line)
    print(format_table(result))
    for out in (args.json, args.report):
        if out is not None:
            print(f"wrote {out}")
    return 0
