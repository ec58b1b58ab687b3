"""The motifs recall: a copy model over the piece's own key-downs (memory.settings' recall "motifs")."""

from __future__ import annotations

import bisect

import numpy as np
import torch

MOTIF = 4  # intervals a recalled place must share with the piece's last key-downs
MATCHES = 16  # the latest such places, one vote each


class Motifs:
    """One piece's key-downs so far, indexed by each run of MOTIF intervals (transposition-invariant,
    as a theme returns in another key). propose(): for each of the latest MATCHES earlier places whose
    MOTIF intervals equal the piece's last MOTIF, the current pitch plus the interval that followed
    there, when that following key-down was taken size ... gap + 1 events before now. A copy model
    over the piece's own melody, what an n-gram cache is to words; no hidden states, so it costs a
    dictionary look-up a step where the state cache's product costs ~40 us (docs/benchmarks.md)."""

    def __init__(self):
        self.pitch: list[int] = []
        self.step: list[int] = []
        self.index: dict[tuple, list[int]] = {}
        self.last: tuple | None = None  # the piece's last MOTIF intervals
        self.seen = 0  # steps scored so far (scoring carries it across a file's chunks)

    def _key(self, n: int) -> tuple:
        p = self.pitch
        return tuple(p[i + 1] - p[i] for i in range(n - MOTIF, n))

    def add(self, pitch: int, step: int) -> None:
        self.pitch.append(pitch)
        self.step.append(step)
        n = len(self.pitch) - 1
        self.last = self._key(n) if n >= MOTIF else None
        if self.last is not None:
            self.index.setdefault(self.last, []).append(n)

    def prune(self, size: int) -> None:
        """Bounded memory: past 2 x size key-downs, keep the newest size + MOTIF + 1 (a follower within
        size events has at most size key-downs after it, and its motif MOTIF + 1 before)."""
        if len(self.pitch) <= 2 * size + MOTIF + 1:
            return
        keep = size + MOTIF + 1
        pitch, step = self.pitch[-keep:], self.step[-keep:]
        self.pitch, self.step, self.index = [], [], {}
        for p, s in zip(pitch, step):
            self.add(p, s)

    def propose(self, now: int, size: int, gap: int, width: int) -> np.ndarray | None:
        """Votes over the `width` pitches (normalised), or None where nothing earlier matches."""
        self.prune(size)
        n = len(self.pitch) - 1
        if n < MOTIF:
            return None
        places = self.index[self.last]
        # the followers taken gap + 1 or more events back are the key-downs before index f; each place
        # j is followed by j + 1, so the places to look at are j < f - 1 (bisect: repeated figures
        # make long lists, and the newest of them are the ones the gap rules out)
        f = bisect.bisect_left(self.step, now - gap)
        k = bisect.bisect_left(places, min(n, f - 1))
        votes = np.zeros(width)
        found = 0
        for i in range(k - 1, -1, -1):
            j = places[i]
            if self.step[j + 1] < now - size:
                break  # the index is in order: every earlier place is older still
            p = self.pitch[n] + self.pitch[j + 1] - self.pitch[j]
            if 0 <= p < width:
                votes[p] += 1
                found += 1
                if found == MATCHES:
                    break
        return votes / found if found else None


def motif_logprob(nxt: torch.Tensor, hist: Motifs | None, size: int, gap: int, proposes: slice):
    """log p_cache(target) of the motifs recall for each step of one file's chunk (nan where it has
    nothing to say: no match, or the target is not a key-down), and the Motifs to carry on."""
    mot = Motifs() if hist is None else hist
    width = proposes.stop - proposes.start
    out = np.full(len(nxt), np.nan, np.float32)
    for q, y in enumerate(nxt.tolist()):
        y -= proposes.start
        if 0 <= y < width:
            c = mot.propose(mot.seen, size, gap, width)
            if c is not None:
                out[q] = np.log(c[y]) if c[y] > 0 else -np.inf
            mot.add(y, mot.seen)
        mot.seen += 1
    return torch.from_numpy(out).to(nxt.device), mot
