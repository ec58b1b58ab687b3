"""Piano-roll pictures of MIDI files: notes coloured by velocity over a sustain-pedal lane."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_path
from .notes import open_score

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CMAP = "viridis"
PEDAL_COLOR = "#c0504d"


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch name (60 -> C4)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


SECTION_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2")


def piano_roll(midi, out_path=None, ax=None, title=None, max_seconds=None, sections=None):
    """Draw a piano roll of ``midi`` (path or symusic Score); return the matplotlib Figure.

    Notes are bars (seconds vs pitch, C's labelled) coloured by velocity, with a colorbar and a
    sustain-pedal lane below (shaded where CC64 >= 64). With ``ax`` the roll, lane and colorbar
    share that axes' area, so it fits in a grid of subplots. With ``out_path`` a PNG is written
    (atomically). ``max_seconds`` shows only the start of the piece. ``sections``: (label, start,
    end) seconds of a planned piece (its NAME.plan.json), drawn as labelled bands over the roll.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    from .audio.timeline import pedal_intervals

    score = open_score(midi)
    on, off, pitch, vel, pedals = [], [], [], [], []
    end = max((float(t.end()) for t in score.tracks), default=0.0)
    for tr in score.tracks:
        n = tr.notes.numpy()
        if len(n["pitch"]):
            on.append(n["time"].astype(np.float64))
            off.append(on[-1] + np.maximum(n["duration"].astype(np.float64), 0))
            pitch.append(n["pitch"].astype(np.int16))
            vel.append(n["velocity"].astype(np.int16))
        c = tr.controls.numpy()
        pedals.append(pedal_intervals(c["time"], c["number"], c["value"], end=end))
    on = np.concatenate(on) if on else np.zeros(0)
    off = np.concatenate(off) if off else np.zeros(0)
    pitch = np.concatenate(pitch) if pitch else np.zeros(0, np.int16)
    vel = np.concatenate(vel) if vel else np.zeros(0, np.int16)
    pedals = np.concatenate(pedals) if pedals else np.zeros((0, 2))

    if max_seconds is not None:
        keep = on < max_seconds
        on, off, pitch, vel = on[keep], np.minimum(off[keep], max_seconds), pitch[keep], vel[keep]
        pedals = pedals[pedals[:, 0] < max_seconds]
        pedals[:, 1] = np.minimum(pedals[:, 1], max_seconds)
        end = max_seconds
    end = max(end, float(off.max()) if len(off) else 0.0, 1.0)

    if ax is None:
        fig = Figure(figsize=(12, 5), dpi=110)
        # fixed margins: constrained layout does not see the axes carved out by the divider
        fig.subplots_adjust(left=0.07, right=0.93, top=0.92 if title else 0.96, bottom=0.1)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    # carve the lane and colorbar out of ax itself so the roll works inside a caller's grid
    divider = make_axes_locatable(ax)
    lane = divider.append_axes("bottom", size="9%", pad=0.08, sharex=ax)
    cax = divider.append_axes("right", size="1.5%", pad=0.1)

    norm = Normalize(0, 127)
    if len(pitch):
        lo, hi = int(pitch.min()) - 2, int(pitch.max()) + 2
        # each note a rectangle; one PolyCollection draws thousands of them quickly
        h = 0.4
        verts = np.stack([
            np.stack([on, pitch - h], 1), np.stack([off, pitch - h], 1),
            np.stack([off, pitch + h], 1), np.stack([on, pitch + h], 1),
        ], 1)
        bars = PolyCollection(verts, array=vel.astype(float), cmap=CMAP, norm=norm,
                              edgecolors="face", linewidths=0.3)
        ax.add_collection(bars)
        fig.colorbar(bars, cax=cax, label="velocity")
    else:
        lo, hi = 48, 84
        ax.text(0.5, 0.5, "no notes", transform=ax.transAxes, ha="center", va="center", color="0.4")
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=cax, label="velocity")

    cs = [p for p in range(lo, hi + 1) if p % 12 == 0]
    ax.set_yticks(cs, [note_name(p) for p in cs])
    ax.set_ylim(lo - 0.5, hi + 0.5)
    ax.set_xlim(0, end)
    ax.set_ylabel("pitch")
    for p in cs:  # octave lines guide the eye without a dense grid
        ax.axhline(p - 0.5, color="0.85", lw=0.6, zorder=0)
    black = [p for p in range(lo, hi + 1) if p % 12 in (1, 3, 6, 8, 10)]
    for p in black:  # faint black-key rows, like a keyboard turned on its side
        ax.axhspan(p - 0.5, p + 0.5, color="0.96", lw=0, zorder=-1)
    ax.tick_params(labelbottom=False)
    if title:
        ax.set_title(title)
    draw_sections(ax, sections or ())

    for s, e in pedals:
        lane.axvspan(s, e, color=PEDAL_COLOR, alpha=0.55, lw=0)
    if not len(pedals):  # e.g. a composed piece: the Performance vocabulary folds sustain into note lengths
        lane.text(0.5, 0.5, "no sustain pedal in this MIDI (sustain is in the note lengths)", transform=lane.transAxes,
                  ha="center", va="center", fontsize=8, color="0.45")
    lane.set_yticks([])
    lane.set_ylabel("pedal", rotation=0, ha="right", va="center")
    lane.set_xlabel("time (s)")
    lane.set_xlim(0, end)

    if out_path is not None:
        _save_png(fig, Path(out_path))
    return fig


def draw_sections(ax, sections) -> None:
    """Labelled bands for a plan's sections; a letter keeps its colour when it returns."""
    letters = []
    for label, start, end in sections:
        letter = label.rstrip("'")
        if letter not in letters:
            letters.append(letter)
        color = SECTION_COLORS[letters.index(letter) % len(SECTION_COLORS)]
        ax.axvspan(start, end, color=color, alpha=0.08, lw=0, zorder=-2)
        ax.axvline(start, color=color, lw=1.0, alpha=0.7, zorder=0)
        ax.text((start + end) / 2, 0.985, label, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=9, fontweight="bold", color=color, clip_on=False)


def _save_png(fig, out_path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not out_path.parent.is_dir():
        raise UserError(f"output folder {out_path.parent} does not exist")
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        FigureCanvasAgg(fig)  # Agg without pyplot: no display, no global figure registry
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png")
    except OSError as e:
        raise UserError(f"cannot write {out_path}: {e.strerror or e}") from None
