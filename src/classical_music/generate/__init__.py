"""Composing with a trained model: `classical-music generate`, `python generate.py` (usage: command.py).

    command.py     the command line and compose(): a request to files (MIDI, WAV/MP3, piano roll)
    config.py      GenerateConfig: what a run asks for, checked before the model loads
    checkpoint.py  the model to compose with, and the styles it knows
    primer.py      the opening a piece continues, run through the model once
    sampling.py    sample(): one LSTM step per event, with KeyTracker's rules and steering
"""

from .checkpoint import DEFAULT_MODEL, check_device, condition_codes, default_checkpoint, list_conditions, load_model
from .command import add_arguments, add_parser, compose, main, output_paths, write_midi, write_midi_atomic
from .config import MAX_EVENTS, MAX_SECONDS, PRECISIONS, GenerateConfig
from .primer import (MAX_PRIMER_EVENTS, PRIME_CHUNK, parse_note_name, parse_primer_notes, prime, primer_from_midi,
                     primer_tokens)
from .sampling import (END_AFTER, MAX_NOTE_SECONDS, RELEASE_HOLD_GAIN, RELEASE_HOLD_SECONDS, RELEASE_POLY_GAIN,
                       RELEASE_POLYPHONY, STEER_AHEAD, STEER_DENSITY_GAIN, STEER_KEY_GAIN, KeyTracker, _draw,
                       end_allowed_after, filter_logits, sample, steering, use_int8)

# What `classical_music.generate` offered as one module, importable from here as before. A test
# that replaces one of these must patch the submodule that calls it (compose() calls
# command.sample, not this package's sample).
__all__ = [
    "DEFAULT_MODEL", "END_AFTER", "MAX_EVENTS", "MAX_NOTE_SECONDS", "MAX_PRIMER_EVENTS", "MAX_SECONDS", "PRECISIONS",
    "PRIME_CHUNK", "RELEASE_HOLD_GAIN", "RELEASE_HOLD_SECONDS", "RELEASE_POLY_GAIN", "RELEASE_POLYPHONY",
    "STEER_AHEAD", "STEER_DENSITY_GAIN", "STEER_KEY_GAIN", "GenerateConfig", "KeyTracker", "_draw",
    "add_arguments", "add_parser", "check_device", "compose", "condition_codes", "default_checkpoint",
    "end_allowed_after", "filter_logits", "list_conditions", "load_model", "main", "output_paths", "parse_note_name",
    "parse_primer_notes", "prime", "primer_from_midi", "primer_tokens", "sample", "steering", "use_int8",
    "write_midi", "write_midi_atomic",
]
