"""What the per-event conditions are computed from: each note's onset second, pitch and weight,
read off a token stream (no metadata, no re-tokenizing), and windowed sums over seconds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Onsets:
    """The key-downs of one file, by whole second (cumulative sums then make windows linear-time)."""

    seconds: int  # whole seconds the file spans (the last one included)
    second: np.ndarray  # each onset's second
    pitch: np.ndarray  # each onset's pitch
    weight: np.ndarray  # its key-profile weight: its length, clipped to 0.05 ... 2 s


def onsets(tokens: np.ndarray, tokenizer) -> tuple[np.ndarray, Onsets] | None:
    """(the second of each token, the file's Onsets), or None without notes or a time grammar.

    Each key-down lasts until the next event of the same pitch (its key-up, or a re-strike)."""
    tokens = np.asarray(tokens, np.int64)
    n = len(tokens)
    if n == 0 or not getattr(tokenizer, "timed", False):
        return None
    sps = tokenizer.steps_per_second
    step = np.cumsum(tokenizer.shift_steps(tokens))  # time (steps) after each token
    sec = step // sps
    is_on, is_off, pitch = tokenizer.key_events(tokens)
    if not is_on.any():
        return None
    note_pos = np.flatnonzero(is_on | is_off)
    pitch = pitch[note_pos]
    order = np.lexsort((note_pos, pitch))
    p_sorted, pos_sorted = pitch[order], note_pos[order]
    nxt = np.empty_like(pos_sorted)
    nxt[:-1] = pos_sorted[1:]
    nxt[-1] = n - 1
    last_of_pitch = np.ones(len(order), bool)
    last_of_pitch[:-1] = p_sorted[1:] != p_sorted[:-1]
    nxt[last_of_pitch] = n - 1
    ons = is_on[pos_sorted]
    dur = (step[nxt[ons]] - step[pos_sorted[ons]]) / sps
    return sec, Onsets(int(sec[-1]) + 1, sec[pos_sorted[ons]], p_sorted[ons], np.clip(dur, 0.05, 2.0))


def window_sum(x: np.ndarray, half: int) -> np.ndarray:
    """Sum of x over [i - half, i + half] along axis 0, clipped at the ends."""
    c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    i = np.arange(len(x))
    return c[np.minimum(i + half + 1, len(x))] - c[np.maximum(i - half, 0)]
