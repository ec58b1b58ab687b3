"""`classical-music compare GENERATED REFERENCE`: how close is a set of pieces to another set?

    statistics.py  the features of a piece, their smoothed distributions, overlap area and KL
                   (the method, after Yang & Lerch 2018, is in its docstring)
    sets.py        two sets of MIDI files loaded and compared feature by feature
    report.py      the printed table and the HTML report with its plots
    command.py     the command line
"""

from .command import add_parser
from .sets import compare_sets
from .statistics import FEATURE_NAMES, features, kl_divergence, load_notes, overlap_area, piece_features

__all__ = ["FEATURE_NAMES", "add_parser", "compare_sets", "features", "kl_divergence", "load_notes", "overlap_area",
           "piece_features"]
