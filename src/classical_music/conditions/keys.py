"""The key condition's vocabulary and estimation: 24 major/minor keys, Krumhansl-Schmuckler."""

from __future__ import annotations

import re

import numpy as np

from ..errors import UserError
from .names import fold

KEY_WINDOW = 16.0  # seconds around each event
_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
KEYS = tuple(f"{n} major" for n in _MAJOR_NAMES) + tuple(f"{n} minor" for n in _MINOR_NAMES)
_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
# Krumhansl & Kessler (1982) probe-tone profiles.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _profiles() -> np.ndarray:
    rows = [np.roll(_KK_MAJOR, t) for t in range(12)] + [np.roll(_KK_MINOR, t) for t in range(12)]
    p = np.array(rows)
    p = p - p.mean(1, keepdims=True)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


PROFILES = _profiles()  # [24, 12], zero-mean unit rows, in KEYS order

# How real music uses a key: the share of key-downs on each pitch class above the tonic, against the
# key of the 16 s around each (key_codes), over the train split of ../shared/data/classical-piano
# (3.8 M notes; bench/key_use.py measures them again). A key is held to these (generate's KeyHold):
# Krumhansl's probe-tone ratings are how well a tone fits, not how often it sounds, and as a logit
# bonus they put 47 % of a held key's notes on its tonic (real music: 21 %).
KEY_USE_MAJOR = (0.214, 0.0238, 0.0918, 0.0224, 0.1262, 0.108, 0.0265, 0.1675, 0.0349, 0.0823, 0.0419, 0.0608)
KEY_USE_MINOR = (0.1842, 0.0346, 0.0865, 0.1384, 0.0303, 0.0907, 0.0427, 0.1483, 0.0902, 0.0408, 0.06, 0.0532)


def key_use(index: int) -> np.ndarray:
    """The share of notes on each of the 12 pitch classes (C first) in this key (KEYS index)."""
    use = np.asarray(KEY_USE_MINOR if index >= 12 else KEY_USE_MAJOR, np.float64)
    return np.roll(use / use.sum(), index % 12)


def parse_key(text: str) -> int:
    """KEYS index of "C", "Am", "F# minor", "Eb major", "bb min", "D-flat major"; UserError otherwise."""
    t = fold(text).replace("-flat", "b").replace("-sharp", "#").replace("♭", "b").replace("♯", "#")
    m = re.fullmatch(r"([a-g])\s*([#b]?)\s*(major|maj|minor|min|m|)", t.replace(" ", "")) if t else None
    if not m:
        raise UserError(f"key {text!r}: expected a key like C, Am, F# minor or Eb major")
    pc = (_PC[m[1]] + {"#": 1, "b": -1, "": 0}[m[2]]) % 12
    minor = m[3] in ("minor", "min", "m")
    return pc + 12 * minor


def key_name(index: int) -> str:
    return KEYS[index]


def relative_key(index: int) -> int:
    """The relative minor of a major key and the other way round."""
    return (index + 9) % 12 + 12 if index < 12 else (index - 12 + 3) % 12


def transpose_key(index: int, semitones: int) -> int:
    return (index % 12 + semitones) % 12 + 12 * (index >= 12)


def estimate_key(pitch, weight=None) -> int | None:
    """Krumhansl-Schmuckler: the KEYS index whose profile best matches the notes, None without notes."""
    pitch = np.asarray(pitch, np.int64)
    if len(pitch) == 0:
        return None
    hist = np.bincount(pitch % 12, weights=None if weight is None else np.asarray(weight, float), minlength=12)
    if not hist.any() or np.allclose(hist, hist[0]):
        return None
    return int(np.argmax(PROFILES @ (hist - hist.mean())))


def note_durations(notes, cap: float = 2.0) -> np.ndarray:
    """Key-profile weights: each note's length, capped so one held chord cannot outweigh a passage."""
    return np.clip(np.asarray(notes.offset) - np.asarray(notes.onset), 0.05, cap)



def key_codes(o) -> np.ndarray:
    """Each second's key code (1 + KEYS index; 0 with no notes, or all twelve equally, nearby):
    a duration-weighted pitch-class histogram over the window (o: events.Onsets)."""
    from .events import window_sum

    hist = np.bincount(o.second * 12 + o.pitch % 12, weights=o.weight, minlength=o.seconds * 12)
    win = window_sum(hist.reshape(o.seconds, 12), int(KEY_WINDOW // 2))
    centred = win - win.mean(1, keepdims=True)
    keys = np.argmax(centred @ PROFILES.T, axis=1) + 1
    keys[~(np.abs(centred).sum(1) > 1e-9)] = 0
    return keys


def transpose_codes(codes: np.ndarray, semitones: int) -> np.ndarray:
    """Key codes (1 + KEYS index: tonic + 12 * minor; 0 = any) of music moved by semitones."""
    k0 = codes - 1
    return np.where(codes > 0, (k0 % 12 + semitones) % 12 + 12 * (k0 >= 12) + 1, 0)


# Which keys a checkpoint's music is in: config.json may carry a "home_keys" block, how many of its
# pieces open in each key (KEYS names). `finetune` writes your folder's, and a piece asked for no
# key then draws its home key from them (generate.form.resolve_plan): 32 pieces of 30 s from a model
# fine-tuned on ten string quartets overlap its held-out movements' pitch classes 0.89 in keys drawn
# so, 0.78 left to find their own, the shipped model's 0.83 (docs/benchmarks.md, "Your folder's
# keys"). A checkpoint without the block (the shipped model's) draws from all 24 for a planned
# piece and leaves a through-composed one to find its own.
HOME_KEYS_KEY = "home_keys"


def home_keys_block(per_piece: dict[str, list[int]], source: str) -> dict | None:
    """The config.json block from each piece's files' opening keys (KEYS indices; a piece's most
    common one counts); None with fewer than 2 pieces."""
    counts: dict[str, int] = {}
    for keys in per_piece.values():
        if keys:
            name = KEYS[max(set(keys), key=lambda k: (keys.count(k), -k))]
            counts[name] = counts.get(name, 0) + 1
    if sum(counts.values()) < 2:
        return None
    return {"counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], KEYS.index(kv[0])))),
            "pieces": sum(counts.values()), "source": source}


# A few pieces say little about the keys of the next: the counts are drawn from as a Dirichlet
# posterior with this many pieces' worth of all 24 keys alike. A folder of 18 sequenced pieces
# in C, E, D, F# and B major among others held out five in G minor, C minor, F and C: drawn by the
# counts alone its 120-s pieces' pitch classes overlapped those 0.74, the shipped model's (any key)
# 0.77; smoothed, its 120-s pieces overlap the held-out ones 0.775 against the shipped model's 0.761.
HOME_KEYS_PRIOR = 8.0


def model_home_keys(model) -> np.ndarray | None:
    """The checkpoint's home keys as 24 weights in KEYS order summing to 1 (HOME_KEYS_PRIOR
    smoothing), or None (no block, or one that is not a mapping of key names to counts)."""
    block = (getattr(model, "checkpoint_config", None) or {}).get(HOME_KEYS_KEY)
    counts = block.get("counts") if isinstance(block, dict) else None
    if not isinstance(counts, dict) or not counts:
        return None
    w = np.zeros(len(KEYS))
    for name, n in counts.items():
        if name not in KEYS or isinstance(n, bool) or not isinstance(n, (int, float)):
            return None
        try:
            n = float(n)
        except OverflowError:  # an int past float range, from a hand-edited config
            return None
        if not np.isfinite(n) or n < 0:
            return None
        w[KEYS.index(name)] += n
    with np.errstate(over="ignore"):
        total = float(w.sum())
    if not np.isfinite(total) or total <= 0:
        return None
    w += HOME_KEYS_PRIOR / len(KEYS)
    return w / w.sum()
