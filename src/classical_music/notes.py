"""Notes as plain arrays: the common currency between MIDI files, tokenizers and statistics.

A :class:`Notes` holds onsets and offsets in seconds (offsets already extended by the sustain
pedal), pitches and velocities. symusic parses the MIDI (C++, ~1 ms a file); everything after that
is vectorised numpy so preparation stays close to parse speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bounds that keep absurd files from exhausting memory or producing useless sequences.
MAX_NOTE_SECONDS = 30.0  # longer notes are clipped: nobody holds a piano key for hours
MAX_FILE_BYTES = 16 * 2**20


@dataclass
class Notes:
    onset: np.ndarray  # float64 seconds
    offset: np.ndarray  # float64 seconds, >= onset
    pitch: np.ndarray  # int16 0..127
    velocity: np.ndarray  # int16 1..127

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def seconds(self) -> float:
        return float(self.offset.max()) if len(self) else 0.0

    @classmethod
    def empty(cls) -> "Notes":
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int16), np.zeros(0, np.int16))

    def sorted(self) -> "Notes":
        # onset order is all consumers need; lexsort with a pitch key cost more than parsing
        order = np.argsort(self.onset, kind="stable")
        return Notes(self.onset[order], self.offset[order], self.pitch[order], self.velocity[order])


class MidiReadError(Exception):
    """A file that cannot become notes; the message is the reason shown in skip reports."""


def load_score(path: str | Path):
    """Parse a MIDI file with symusic in seconds, turning every failure into MidiReadError."""
    import symusic

    # One open and one read, then symusic parses the bytes: cheaper than letting symusic open the
    # file again after our checks (and than symusic.Score(path) alone; see bench/prepare.py).
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise MidiReadError("empty file")
            if size > MAX_FILE_BYTES:
                raise MidiReadError(f"file too large ({size / 2**20:.1f} MB > {MAX_FILE_BYTES // 2**20} MB)")
            data = f.read()
    except OSError as e:
        raise MidiReadError(f"unreadable: {e.strerror or e}") from None
    if data[:4] not in (b"MThd", b"RIFF"):
        raise MidiReadError("not a MIDI file (no MThd header)")
    try:
        return symusic.Score.from_midi(data, ttype="second")
    except Exception as e:  # symusic raises plain RuntimeError/ValueError for malformed data
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MidiReadError(f"malformed MIDI: {msg[:200]}") from None


def open_score(midi):
    """A symusic Score in seconds from a path or any symusic Score; anything else is a UserError."""
    from .errors import UserError

    if isinstance(midi, (str, os.PathLike)):
        path = Path(midi)
        if not path.exists():
            raise UserError(f"MIDI file {path} not found")
        try:
            return load_score(path)
        except MidiReadError as e:
            raise UserError(f"cannot read MIDI file {path}: {e}") from None
    if hasattr(midi, "tracks") and hasattr(midi, "to"):  # whatever its time unit
        return midi.to("second")
    raise UserError(f"expected a MIDI path or a symusic Score, got {type(midi).__name__}")


def fold_pedal(onset, offset, pitch, ped_start, ped_end):
    """Sustain pedal folded into note lengths, as Performance RNN does.

    A note released while the pedal is down ends when the pedal lifts, unless the same pitch is
    struck again first (a piano string is damped by its own re-strike).
    """
    offset = offset.copy()
    if len(ped_start):
        order = np.argsort(ped_start, kind="stable")
        ps, pe = ped_start[order], ped_end[order]
        # pedal intervals from symusic never overlap within a track; merged tracks might, so take a
        # running max of ends to make "is the pedal down at t" a single searchsorted.
        pe = np.maximum.accumulate(pe)
        k = np.searchsorted(ps, offset, side="right") - 1
        down = (k >= 0) & (offset < pe[np.maximum(k, 0)])
        offset[down] = pe[k[down]]
    # Clip each note at the next onset of the same pitch. (pitch, onset) order from two stable
    # sorts: onsets arrive nearly in order (timsort merges runs in ~linear time), then a radix
    # sort on uint8 pitches; 3x faster than one quicksort on a float key (bench/prepare.py).
    order = np.argsort(onset, kind="stable")
    order = order[np.argsort(pitch[order].astype(np.uint8), kind="stable")]
    p, on = pitch[order], onset[order]
    nxt = np.full(len(order), np.inf)
    same = p[1:] == p[:-1]
    nxt[:-1][same] = on[1:][same]
    tie = nxt == on
    if tie.any():
        # A key struck twice at one instant is one strike: neither copy clips the other, both
        # take the next strictly later onset (the last of the tied run's).
        last_of_run = np.flatnonzero(~tie)
        nxt = nxt[last_of_run[np.searchsorted(last_of_run, np.arange(len(nxt)))]]
    clipped = np.minimum(offset[order], nxt)
    offset[order] = np.maximum(clipped, on)
    return offset


def score_to_notes(score, sort: bool = True) -> Notes:
    """All non-drum notes of a symusic Score (in seconds), sustain folded, absurd lengths clipped."""
    ons, offs, pitches, vels, ps, pe = [], [], [], [], [], []
    for track in score.tracks:
        if track.is_drum:
            continue
        n = track.notes.numpy()
        if len(n["pitch"]):
            t = n["time"].astype(np.float64)
            ons.append(t)
            offs.append(t + np.clip(n["duration"].astype(np.float64), 0, MAX_NOTE_SECONDS))
            pitches.append(n["pitch"].astype(np.int16))
            vels.append(n["velocity"].astype(np.int16))
        p = track.pedals.numpy()
        if len(p["time"]):
            ps.append(p["time"].astype(np.float64))
            pe.append(ps[-1] + np.clip(p["duration"].astype(np.float64), 0, None))
    if not ons:
        return Notes.empty()
    onset = np.concatenate(ons)
    offset = np.concatenate(offs)
    pitch = np.concatenate(pitches)
    velocity = np.clip(np.concatenate(vels), 1, 127)
    keep = (onset >= 0) & (pitch >= 0) & (pitch <= 127)
    onset, offset, pitch, velocity = onset[keep], offset[keep], pitch[keep], velocity[keep]
    ped_s = np.concatenate(ps) if ps else np.zeros(0)
    ped_e = np.concatenate(pe) if pe else np.zeros(0)
    offset = fold_pedal(onset, offset, pitch, ped_s, ped_e)
    offset = np.minimum(offset, onset + MAX_NOTE_SECONDS)
    notes = Notes(onset, offset, pitch, velocity)
    return notes.sorted() if sort else notes


def has_drums_only(score) -> bool:
    return any(len(t.notes) for t in score.tracks if t.is_drum) and not any(
        len(t.notes) for t in score.tracks if not t.is_drum
    )


def notes_to_score(notes: Notes, tpq: int = 480, tempo_bpm: float = 120.0, program: int = 0):
    """A one-track piano Score in ticks with an explicit tempo, so every player opens it alike."""
    import symusic

    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, tempo_bpm))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(name="Piano", program=program, is_drum=False)
    ticks_per_second = tpq * tempo_bpm / 60.0
    if len(notes):
        on = np.round(notes.onset * ticks_per_second).astype(np.int32)
        off = np.round(notes.offset * ticks_per_second).astype(np.int32)
        dur = np.maximum(off - on, 1)  # a zero-length note would be dropped by some players
        track.notes = symusic.Note.from_numpy(
            time=on, duration=dur, pitch=notes.pitch.astype(np.int8), velocity=notes.velocity.astype(np.int8)
        )
    score.tracks.append(track)
    return score
