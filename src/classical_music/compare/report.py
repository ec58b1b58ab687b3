"""What `compare` writes: the table it prints, and the HTML report (distribution plots and piano
rolls as embedded PNGs); --json is the result dict as it is."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from ..files import write_text
from .sets import PieceSet
from .statistics import FEATURES, Distributions, _prepare

ROLL_PIECES = 3
ROLL_SECONDS = 30.0

GENERATED_COLOR = "#e66101"
REFERENCE_COLOR = "#2c7bb6"
PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


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
    from matplotlib.figure import Figure

    from ..plot import piano_roll

    chosen = _pick(ps.files, ROLL_PIECES)
    # One sub-figure per roll with fixed margins: constrained layout does not see the pedal lane and
    # colorbar the roll carves out of its axes, so it put each title over the time axis above it.
    height = 2.9
    fig = Figure(figsize=(10, height * len(chosen)), dpi=100)
    axes = []
    for sub in np.atleast_1d(fig.subfigures(len(chosen), 1)):
        sub.subplots_adjust(left=0.07, right=0.92, top=1 - 0.32 / height, bottom=0.5 / height)
        axes.append(sub.add_subplot())
    for ax, path in zip(axes, chosen):
        title = f"{ps.label}: {_short_name(path, ps.roots)} (first {ROLL_SECONDS:.0f} s)"
        piano_roll(str(path), ax=ax, title=title, max_seconds=ROLL_SECONDS)
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
