"""Composing with a trained model: `classical-music generate`, `python generate.py` (usage: command.py).

    command.py     the command line and compose(): a request to files (MIDI, WAV/MP3, piano roll)
    config.py      GenerateConfig: what a run asks for, checked before the model loads
    checkpoint.py  the model to compose with, and the styles it knows
    primer.py      the opening a piece continues, run through the model once
    options.py     SamplingOptions: how each next event is chosen, one set of defaults and bounds
    composer.py    compose(): primer tokens to events and notes (generate, the studio, play-along)
    sampling.py    sample(): one LSTM step per event, with KeyTracker's rules and steering
    form.py        the plan of a whole piece (--form), and conductor.py, which plays it
"""

from .checkpoint import condition_codes, default_checkpoint, list_conditions, load_model
from .command import add_arguments, add_parser, compose, main, output_paths, write_midi_atomic
from .config import MAX_EVENTS, MAX_SECONDS, GenerateConfig
from .primer import MAX_PRIMER_EVENTS, parse_note_name, parse_primer_notes, prime, primer_tokens
from .sampling import end_allowed_after, filter_logits, sample, steering

# The package's API; everything else is imported from its submodule. A test that replaces one of
# these must patch the module that calls it (compose() samples through composer.sample).
__all__ = [
    "MAX_EVENTS", "MAX_PRIMER_EVENTS", "MAX_SECONDS", "GenerateConfig", "add_arguments", "add_parser", "compose",
    "condition_codes", "default_checkpoint", "end_allowed_after", "filter_logits", "list_conditions", "load_model",
    "main", "output_paths", "parse_note_name", "parse_primer_notes", "prime", "primer_tokens", "sample", "steering",
    "write_midi_atomic",
]
