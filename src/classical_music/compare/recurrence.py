"""How much a piece repeats its own melody: the top voice's recurrence.

The top voice is the highest pitch of each onset cluster (onsets within CLUSTER s of the cluster's
first). Its recurrence is the share of its interval NGRAM-grams (pitch steps between successive
top notes, so transposition-invariant) that already occurred at least EARLIER s before in the same
piece. Real music that returns to its motifs, sequences and themes scores high; a melody that
wanders scores low. One home for the measure: bench/memory.py (issue 26) and bench/form.py
(issue 23) both use it.
"""

from __future__ import annotations

import numpy as np

from ..notes import Notes

CLUSTER = 0.05
NGRAM = 6
EARLIER = 4.0


def top_voice(notes: Notes) -> tuple[np.ndarray, np.ndarray]:
    """(onset, pitch) of the highest note of each onset cluster (a cluster: onsets within CLUSTER s of its first)."""
    order = np.lexsort((notes.pitch, notes.onset))
    on, pitch = notes.onset[order], notes.pitch[order].astype(np.int64)
    times, tops = [], []
    start = -np.inf
    for t, p in zip(on.tolist(), pitch.tolist()):
        if t - start > CLUSTER:
            start = t
            times.append(t)
            tops.append(p)
        elif p > tops[-1]:
            tops[-1] = p
    return np.array(times), np.array(tops, np.int64)


def recurrence(notes: Notes) -> float | None:
    """Share of the top voice's interval NGRAM-grams first heard >= EARLIER s before; None when
    the top voice has fewer than NGRAM + 1 notes."""
    t, p = top_voice(notes)
    iv = np.diff(p)
    if len(iv) < NGRAM:
        return None
    first: dict[tuple, float] = {}
    hits = total = 0
    for i in range(len(iv) - NGRAM + 1):
        g = tuple(iv[i:i + NGRAM].tolist())
        total += 1
        if g in first and first[g] <= t[i] - EARLIER:
            hits += 1
        first.setdefault(g, t[i])
    return hits / total
