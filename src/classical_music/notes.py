"""Notes as plain arrays: the common currency between MIDI files, tokenizers and statistics.

A :class:`Notes` holds onsets and offsets in seconds (offsets already extended by the sustain
pedal), pitches and velocities. symusic parses the MIDI (C++, ~1 ms a file); everything after that
is vectorised numpy so preparation stays close to parse speed.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import file_kind

# Bounds that keep absurd files from exhausting memory or producing useless sequences.
CLIP_NOTE_SECONDS = 30.0  # longer notes are clipped: nobody holds a piano key for hours
MAX_FILE_BYTES = 16 * 2**20
# A file whose last note starts later than this is refused before anything is sized by its length:
# 52 bytes (1 tick per beat, 16.7 s per tick, a delta of 2^28 ticks) otherwise ask for 8.4 GiB of tokens.
MAX_MUSIC_SECONDS = 6 * 3600.0
# Silences (no key or pedal sounding) longer than this are shortened to it. 30 s changes 1 file of
# the 1,303 in ../shared/data/classical-piano (a 269 s gap); a recording's gaps between movements stay.
MAX_SILENCE_SECONDS = 30.0

# What a file that is not MIDI probably is, by its first bytes: (prefix, offset, description).
_NOT_MIDI = [
    (b"WAVE", 8, "RIFF/WAVE: a WAV audio file?"), (b"ID3", 0, "ID3: an MP3 audio file?"),
    (b"\xff\xfb", 0, "an MP3 audio frame"), (b"\xff\xf3", 0, "an MP3 audio frame"),
    (b"\xff\xf2", 0, "an MP3 audio frame"), (b"fLaC", 0, "fLaC: a FLAC audio file?"),
    (b"OggS", 0, "OggS: an Ogg audio file?"), (b"%PDF", 0, "%PDF: a PDF document?"),
    (b"PK\x03\x04", 0, "PK: a zip archive?"), (b"\x1f\x8b", 0, "a gzip-compressed file"),
    (b"<?xml", 0, "<?xml: MusicXML or other XML? export it as MIDI"),
]


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


def _not_midi(data: bytes) -> str:
    for magic, at, what in _NOT_MIDI:
        if data[at:at + len(magic)] == magic:
            return f"not a MIDI file (starts with {what})"
    head = data[:4]
    if head and all(32 <= c < 127 or c in b"\t\r\n" for c in data[:64]):
        return f"not a MIDI file (it is text, starting {data[:16].decode('ascii').strip()!r})"
    return f"not a MIDI file (starts with {head!r}, not MThd)"


def _midi_bytes(data: bytes) -> bytes:
    """The standard MIDI bytes: as they are, or unwrapped from a RIFF RMID file; MidiReadError if
    neither, or if the header is unusable (symusic turns division 0 into infinite times)."""
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        at = data.find(b"MThd", 12, 64)  # the "data" chunk holds the standard file
        if at < 0:
            raise MidiReadError("RIFF MIDI (RMID) file without MIDI data")
        data = data[at:]
    if data[:4] != b"MThd":
        raise MidiReadError(_not_midi(data))
    if len(data) < 14:
        raise MidiReadError("truncated MIDI header")
    if data[12:14] == b"\x00\x00":
        raise MidiReadError("division 0 in its header: 0 ticks per beat gives no note a time")
    return data


def check_length(score, limit: float = MAX_MUSIC_SECONDS) -> None:
    """MidiReadError if a Score (in seconds) has times that are not finite or notes starting past limit."""
    end = float(score.end())
    if math.isfinite(end) and end <= limit:  # cheap: end() >= the last onset
        return
    last = 0.0
    for track in score.tracks:
        t = track.notes.numpy()["time"]
        if len(t):
            if not np.isfinite(t).all():
                raise MidiReadError("its times are not finite (a broken tempo or division)")
            last = max(last, float(t.max()))
    if not math.isfinite(end) and last == 0.0:
        raise MidiReadError("its times are not finite (a broken tempo or division)")
    if last > limit:
        raise MidiReadError(f"its music lasts {_hours(last)}, over the {_hours(limit)} limit: "
                            "a corrupt tempo or time delta?")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h"


def load_score(path: str | Path):
    """Parse a MIDI file with symusic in seconds, turning every failure into MidiReadError.

    Refuses what is not a regular file (a fifo would block the read for ever), what is not MIDI
    (saying what it looks like), a header of division 0, and music longer than MAX_MUSIC_SECONDS.
    """
    import symusic

    # One open and one read, then symusic parses the bytes: cheaper than letting symusic open the
    # file again after our checks (and than symusic.Score(path) alone; see bench/prepare.py).
    # O_NONBLOCK: opening a fifo must not wait for a writer; it changes nothing for regular files.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise MidiReadError(f"not a regular file ({file_kind(st.st_mode)})")
        with open(fd, "rb") as f:
            size = st.st_size
            if size == 0:
                raise MidiReadError("empty file")
            if size > MAX_FILE_BYTES:
                # say first what it is: a 40 MB WAV renamed .mid is a WAV, not a MIDI file too large
                head = f.read(64)
                rmid = head[:4] == b"RIFF" and head[8:12] == b"RMID"
                what = "" if head[:4] == b"MThd" or rmid else _not_midi(head) + ", and "
                raise MidiReadError(f"{what}file too large ({size / 2**20:.1f} MB > {MAX_FILE_BYTES // 2**20} MB)")
            data = f.read()
    except OSError as e:
        raise MidiReadError(f"unreadable: {e.strerror or e}") from None
    data = _midi_bytes(data)
    try:
        score = symusic.Score.from_midi(data, ttype="second")
    except Exception as e:  # symusic raises plain RuntimeError/ValueError for malformed data
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = msg.removeprefix("MiniMidi: ").removesuffix(": iostream error").replace("Invaild", "invalid")
        raise MidiReadError(f"malformed MIDI, it cannot be parsed ({msg[:200]})") from None
    check_length(score)
    return score


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
            offs.append(t + np.clip(n["duration"].astype(np.float64), 0, CLIP_NOTE_SECONDS))
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
    offset = np.minimum(offset, onset + CLIP_NOTE_SECONDS)
    notes = collapse_silences(Notes(onset, offset, pitch, velocity))
    return notes.sorted() if sort else notes


def long_silences(onset: np.ndarray, end: np.ndarray, max_gap: float = MAX_SILENCE_SECONDS):
    """Every silence longer than max_gap (the opening one too) as (where, excess): the time its
    excess begins (max_gap after the last sound stopped) and how long that excess lasts, in time order.

    ``end`` is when each sound stops (a note's offset, or later where a pedal holds it).
    """
    if len(onset) == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(onset, kind="stable")
    on = onset[order]
    quiet_from = np.empty(len(on))
    quiet_from[0] = 0.0
    quiet_from[1:] = np.maximum.accumulate(end[order])[:-1]
    excess = on - quiet_from - max_gap
    sel = excess > 0
    return quiet_from[sel] + max_gap, excess[sel]


def squeeze_silences(t: np.ndarray, where: np.ndarray, excess: np.ndarray) -> np.ndarray:
    """Times with the excess of each long silence (from long_silences) taken out: monotone, and an
    event inside a removed stretch lands where that stretch began."""
    t = np.asarray(t, dtype=np.float64)
    if not len(where):
        return t
    k = np.searchsorted(where, t, side="right") - 1
    before = np.concatenate([[0.0], np.cumsum(excess)])
    inside = np.where(k >= 0, np.minimum(t - where[np.maximum(k, 0)], excess[np.maximum(k, 0)]), 0.0)
    return t - before[np.maximum(k, 0)] * (k >= 0) - inside


def collapse_silences(notes: Notes, max_gap: float = MAX_SILENCE_SECONDS) -> Notes:
    """Notes with every silence (the opening one too) longer than max_gap shortened to max_gap.

    A silence is measured from the end of the last note still sounding, so no note is shortened;
    order is kept. Bounds the time shifts a tokenizer writes for a file of mostly nothing.
    """
    if len(notes) == 0 or float(notes.offset.max()) <= max_gap:  # nothing that long can hide inside
        return notes
    where, excess = long_silences(notes.onset, notes.offset, max_gap)
    if not len(where):
        return notes
    # a note starts at or after its silence's end, so it moves back by every excess before it
    back = np.concatenate([[0.0], np.cumsum(excess)])[np.searchsorted(where, notes.onset, side="right")]
    return Notes(notes.onset - back, notes.offset - back, notes.pitch, notes.velocity)


LEAD_SECONDS = 1.0  # a composed piece that would open with a longer silence starts at its first note


def trim_leading_silence(notes: Notes, longer_than: float = LEAD_SECONDS) -> tuple[Notes, float]:
    """(notes moved to start at 0, the seconds cut) when the first note comes more than
    `longer_than` seconds in (a model may wait: one 6-s piece began with 3.26 s of silence);
    otherwise (the very same notes, 0.0), so pieces that start promptly are unchanged to the byte."""
    if not len(notes) or not notes.onset.min() > longer_than:
        return notes, 0.0
    lead = float(notes.onset.min())
    return Notes(notes.onset - lead, notes.offset - lead, notes.pitch, notes.velocity), lead


def has_drums_only(score) -> bool:
    return any(len(t.notes) for t in score.tracks if t.is_drum) and not any(
        len(t.notes) for t in score.tracks if not t.is_drum
    )


def notes_to_score(notes: Notes, tpq: int = 480, tempo_bpm: float = 120.0, program: int = 0, pedals=()):
    """A one-track piano Score in ticks with an explicit tempo, so every player opens it alike;
    pedals: (down, up) seconds of sustain pedal (CC64) to add."""
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
    for down, up in pedals:
        track.controls.append(symusic.ControlChange(round(down * ticks_per_second), 64, 127))
        track.controls.append(symusic.ControlChange(round(up * ticks_per_second), 64, 0))
    score.tracks.append(track)
    return score
