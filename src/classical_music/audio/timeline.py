"""What a synthesizer plays: each track's notes, controllers and pitch bends as arrays in seconds,
with every silence over notes.MAX_SILENCE_SECONDS shortened as tokenizing does, so a file of two
notes an hour apart renders 30 s of silence, not an hour of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..notes import MAX_SILENCE_SECONDS, long_silences, squeeze_silences

MAX_RING = 10.0  # a note held by the pedal is rendered at most this long after its key is released
MAX_RING_SECONDS = 60.0  # and no note longer than this from its onset
SUSTAIN = 64  # the sustain pedal's controller number


@dataclass
class Part:
    """One track: onsets/offsets in seconds (key down/up, pedal not folded in), controllers, bends."""

    name: str
    program: int
    is_drum: bool
    on: np.ndarray
    off: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    cc_time: np.ndarray
    cc_number: np.ndarray
    cc_value: np.ndarray
    bend_time: np.ndarray
    bend_value: np.ndarray

    def ring(self) -> np.ndarray:
        """When each note stops sounding: its key's release, or the pedal's lift, capped."""
        end = float(self.off.max()) if len(self.off) else 0.0
        ring = ring_end(self.on, self.off, pedal_intervals(self.cc_time, self.cc_number, self.cc_value, end + MAX_RING))
        return np.minimum(ring, self.on + MAX_RING_SECONDS)


@dataclass
class Performance:
    parts: list[Part]

    @property
    def notes(self) -> int:
        return sum(len(p.on) for p in self.parts)

    def end(self) -> float:
        """When the last note has stopped sounding (pedal included)."""
        return max((float(p.ring().max()) for p in self.parts if len(p.on)), default=0.0)


def pedal_intervals(times, numbers, values, end: float | None = None) -> np.ndarray:
    """(k, 2) [down, up) times of the sustain pedal (CC64 >= 64), a pedal never lifted lasting to ``end``.

    Unlike symusic's ``track.pedals`` this keeps a pedal that is never lifted.
    """
    sel = np.asarray(numbers) == SUSTAIN
    t, down = np.asarray(times, np.float64)[sel], np.asarray(values)[sel] >= 64
    if not len(t):
        return np.zeros((0, 2))
    order = np.argsort(t, kind="stable")
    t, down = t[order], down[order]
    change = np.flatnonzero(np.diff(np.r_[False, down].astype(np.int8)))  # edges, repeats ignored
    times, states = t[change], down[change]
    starts = times[states]
    ends = times[~states]
    if len(ends) < len(starts):
        ends = np.r_[ends, max(end if end is not None else starts[-1], starts[-1])]
    return np.stack([starts, ends], axis=1)


def ring_end(onset: np.ndarray, offset: np.ndarray, pedals: np.ndarray) -> np.ndarray:
    """When each note has stopped sounding: key release, or pedal lift if the pedal holds it, capped."""
    if not len(pedals):
        return offset
    k = np.searchsorted(pedals[:, 0], offset, side="right") - 1
    held = (k >= 0) & (offset < pedals[np.maximum(k, 0), 1])
    ring = offset.copy()
    ring[held] = pedals[k[held], 1]
    return np.minimum(ring, offset + MAX_RING)


def performance(score, max_silence: float = MAX_SILENCE_SECONDS) -> Performance:
    """A symusic Score in seconds -> Performance, notes capped at MAX_RING_SECONDS, long silences shortened."""
    parts = []
    for tr in score.tracks:
        n, c, b = tr.notes.numpy(), tr.controls.numpy(), tr.pitch_bends.numpy()
        on = n["time"].astype(np.float64)
        keep = (on >= 0) & (n["pitch"] >= 0)
        on = on[keep]
        off = on + np.clip(n["duration"][keep].astype(np.float64), 0, MAX_RING_SECONDS)
        parts.append(Part(tr.name, int(tr.program), bool(tr.is_drum), on, off, n["pitch"][keep].astype(np.int16),
                          np.clip(n["velocity"][keep].astype(np.int16), 1, 127),
                          c["time"].astype(np.float64), c["number"].astype(np.int16), c["value"].astype(np.int16),
                          b["time"].astype(np.float64), b["value"].astype(np.int32)))
    sounding = [p for p in parts if len(p.on)]
    if not sounding:
        return Performance(parts)
    where, excess = long_silences(np.concatenate([p.on for p in sounding]),
                                  np.concatenate([p.ring() for p in sounding]), max_silence)
    if len(where):
        for p in parts:
            p.on, p.off = squeeze_silences(p.on, where, excess), squeeze_silences(p.off, where, excess)
            p.cc_time = squeeze_silences(p.cc_time, where, excess)
            p.bend_time = squeeze_silences(p.bend_time, where, excess)
    return Performance(parts)
