"""`classical-music compare GENERATED REFERENCE`: how close is a set of pieces to another set?

    statistics.py  the features of a piece, their smoothed distributions, overlap area and KL
                   (the method, after Yang & Lerch 2018, is in its docstring)
    sets.py        two sets of MIDI files loaded and compared feature by feature
    report.py      the printed table and the HTML report with its plots
    command.py     the command line
"""

from .command import add_parser
from .report import (GENERATED_COLOR, PITCH_CLASS_NAMES, REFERENCE_COLOR, ROLL_PIECES, ROLL_SECONDS, format_table,
                     render_report)
from .sets import PROGRESS_MIN_FILES, PieceSet, compare_piece_sets, compare_sets, load_set
from .statistics import (CHORD_SECONDS, ONSET_RATE_WINDOW, FEATURE_NAMES, FEATURES, GRID_SIZE, KL_EPSILON, MIN_SECONDS,
                         POLYPHONY_STEP, Distributions, Feature, distributions, features, kl_divergence, load_notes,
                         overlap_area, piece_features, silverman_bandwidth)

# What `classical_music.compare` offered as one module, importable from here as before.
__all__ = [
    "CHORD_SECONDS", "ONSET_RATE_WINDOW", "FEATURE_NAMES", "FEATURES", "GENERATED_COLOR", "GRID_SIZE", "KL_EPSILON",
    "MIN_SECONDS", "PITCH_CLASS_NAMES", "POLYPHONY_STEP", "PROGRESS_MIN_FILES", "REFERENCE_COLOR", "ROLL_PIECES",
    "ROLL_SECONDS", "Distributions", "Feature", "PieceSet", "add_parser", "compare_piece_sets", "compare_sets",
    "distributions", "features", "format_table", "kl_divergence", "load_notes", "load_set", "overlap_area",
    "piece_features", "render_report", "silverman_bandwidth",
]
