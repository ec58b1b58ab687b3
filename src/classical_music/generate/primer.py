"""The opening a piece continues: a MIDI file's first seconds or typed chords ("C4 E4 G4, F4 A4
C5"), as tokens, run through the model once to give the LSTM state sampling starts from."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..notes import MidiReadError, Notes, load_score, score_to_notes

# A primer longer than this is refused (take its opening with --primer_seconds): 5-10 minutes of
# piano, which the 3 x 512 model reads in about a minute on one busy CPU core (5,000 events: 5.9 s).
# It runs through the model PRIME_CHUNK events at a time, so memory is that of one chunk (a 15.9 MB
# primer in one pass allocated 10.8 GB).
MAX_PRIMER_EVENTS = 50_000
PRIME_CHUNK = 2048

_NOTE = re.compile(r"^([A-Ga-g])([#b♯♭]*)(-?\d+)$")
_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def parse_note_name(name: str) -> int:
    """Scientific pitch notation: C4 = 60, A4 = 69, Bb3, F#5."""
    m = _NOTE.match(name.strip())
    if not m:
        raise UserError(f"cannot read note {name!r}: write notes like C4, F#3 or Bb5")
    letter, acc, octave = m.groups()
    pitch = _STEPS[letter.upper()] + acc.count("#") + acc.count("♯") - acc.count("b") - acc.count("♭")
    pitch += (int(octave) + 1) * 12
    if not 0 <= pitch <= 127:
        raise UserError(f"note {name!r} is outside the MIDI range")
    return pitch


def parse_primer_notes(text: str, chord_seconds: float = 0.5, velocity: int = 72) -> Notes:
    """"C4 E4 G4, F4 A4 C5": chords separated by commas, each held for chord_seconds."""
    chords = [c.split() for c in text.split(",")]
    if not any(chords):
        raise UserError("--primer_notes is empty: write chords like \"C4 E4 G4, F4 A4 C5\"")
    on, off, pitch = [], [], []
    for i, chord in enumerate(chords):
        if not chord:
            raise UserError(f"--primer_notes has an empty chord at position {i + 1}")
        for name in chord:
            pitch.append(parse_note_name(name))
            on.append(i * chord_seconds)
            off.append((i + 1) * chord_seconds)
    n = len(pitch)
    return Notes(np.array(on), np.array(off), np.array(pitch, np.int16), np.full(n, velocity, np.int16)).sorted()


def primer_from_midi(path: Path, seconds: float | None) -> Notes:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"primer {path} is a folder: give a .mid file")
    if not path.exists():
        raise UserError(f"primer {path} not found")
    try:
        notes = score_to_notes(load_score(path))
    except MidiReadError as e:
        raise UserError(f"cannot use primer {path}: {e}") from None
    if seconds is not None:
        keep = notes.onset < seconds
        notes = Notes(notes.onset[keep], np.minimum(notes.offset[keep], seconds), notes.pitch[keep], notes.velocity[keep])
    if len(notes) == 0:
        raise UserError(f"primer {path} has no notes" + (f" in its first {seconds:g} s" if seconds else ""))
    return notes


def primer_tokens(tokenizer, notes: Notes | None, max_events: int = MAX_PRIMER_EVENTS) -> np.ndarray:
    if notes is None:
        return np.array([tokenizer.bos_id], np.int64)
    tokens = tokenizer.encode_notes(notes).astype(np.int64)[:-1]  # no EOS: the piece goes on
    if len(tokens) - 1 > max_events:
        raise UserError(f"the primer is {len(tokens) - 1:,} events ({notes.seconds:.0f} s of music), over the "
                        f"limit of {max_events:,}: take its opening with --primer_seconds")
    return tokens


@torch.inference_mode()
def prime(model, prefix: np.ndarray, num_samples: int = 1, device="cpu", chunk: int = PRIME_CHUNK, cond=None,
          on_hidden=None):
    """Run prefix through the model chunk by chunk: (logits after its last event [num_samples, vocab],
    LSTM state). The same as one pass (the state is carried), with memory of one chunk.
    cond, if given, goes to the model as is ([B, n]) or sliced like the prefix ([B, T, n]).
    on_hidden(hidden [B, T, H], start): each chunk's top-layer outputs (for the memory's cache)."""
    x = torch.as_tensor(prefix, dtype=torch.long, device=device).unsqueeze(0).expand(num_samples, -1)
    state, kw = None, {}
    if on_hidden is not None:
        kw["return_hidden"] = True
    for s in range(0, x.shape[1], chunk):
        if cond is not None:
            kw["cond"] = cond[:, s:s + chunk] if cond.dim() == 3 else cond
        logits, state, *hidden = model(x[:, s:s + chunk], state, **kw)
        if on_hidden is not None:
            on_hidden(hidden[0], s)
    return logits[:, -1], state
