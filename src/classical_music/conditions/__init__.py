"""Style conditions, defined once for every stage: one `Condition` spec per name in CONDITIONS.

    composer  "Chopin, Frédéric" / "Frédéric Chopin" / "chopin" -> "chopin" (a checkpoint knows the
              composers with enough training music; the rest are "other")
    period    baroque, classical, romantic, impressionist, modern (Aria's music_period, else the
              composer's, from names.COMPOSERS)
    kind      performance (a pianist's timing and dynamics) or sequenced (score-like)
    density   notes per second over DENSITY_WINDOW seconds around each event, in log-spaced bins
    key       one of 24 major/minor keys over KEY_WINDOW seconds around each event
              (Krumhansl-Schmuckler on a duration-weighted pitch-class profile)

Everything that lists conditions is built from CONDITIONS: generate's and evaluate's flags,
GenerateConfig's fields, the studio's request models and menus (/api/config), --list_conditions,
the cache's per-file columns and per-event shards, the dataset. Adding a condition is one spec
here (and its tests); see docs/architecture.md.

Every vocabulary starts with ANY (index 0): unknown, or left out on purpose. Training drops each
condition at random (condition dropout) so any subset can be left at ANY when composing.
A checkpoint's config.json stores the vocabularies it was trained with, so indices never depend
on the data.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import UserError
from .density import (DENSITY_CENTERS, DENSITY_MAX, DENSITY_WINDOW, OPENING_KEY, OPENING_SECONDS, clamp_density,
                      density_bin, density_codes, density_label, draw_density, model_deciles, opening_block,
                      opening_density)
from .events import Onsets, onsets, window_sum
from .keys import (HOME_KEYS_KEY, KEY_WINDOW, KEYS, PROFILES, estimate_key, home_keys_block, key_codes, key_name,
                   key_use, model_home_keys, note_durations, parse_key, relative_key, transpose_codes, transpose_key)
from .names import (COMPOSER_MIN_HOURS, COMPOSERS, KINDS, PERIODS, composer_display, fold, normalize_composer,
                    normalize_kind, normalize_period)

# How alike a name must be to be suggested: 0.5 offered "schumann" for "rachmaninov"
SUGGEST_CUTOFF = 0.75

ANY = "any"
OTHER = "other"


@dataclass(frozen=True)
class Condition:
    """One condition: its values, how a request and a file's metadata or notes map onto them."""

    name: str
    help: str  # generate's --NAME
    labels: Callable[[dict, float], list]  # (composer hours, min hours) -> values, ANY not included
    parse: Callable[[object], str]  # a request -> its value (a label), or UserError
    normalize: Callable[[object], str | None] | None = None  # a free-form name -> its value, or None
    type: type = str  # of the flag and the JSON field
    limits: dict = field(default_factory=dict)  # the JSON field's (pydantic) constraints
    # from a file's metadata (read(meta, found so far) -> value or None) ...
    read: Callable[[dict, dict], str | None] | None = None
    score_help: str = ""  # evaluate's --NAME (metadata conditions)
    # ... or from its notes, per second (events.Onsets -> codes), moved along by a transposition
    per_second: Callable[[Onsets], np.ndarray] | None = None
    transpose: Callable[[np.ndarray, int], np.ndarray] | None = None
    listing: Callable[[list, dict, dict], str] | None = None  # (values, hours, checkpoint config) -> a line
    display: Callable[[str], str] | None = None  # a value's name on the studio's menu, when not itself

    @property
    def from_metadata(self) -> bool:
        return self.read is not None

    @property
    def menu(self) -> str:
        """How the studio asks for it: a menu of the model's values, or a number."""
        return "number" if self.type is float else "select"

    def index(self, value, label: str, labels: list[str]) -> int:
        """The vocabulary index of a parsed request; UserError suggesting known names otherwise."""
        if label in labels:  # "other" too: the composers with too little music to know apart
            return labels.index(label)
        known = [c for c in labels if c not in (ANY, OTHER)]
        near = difflib.get_close_matches(fold(label or value), known, n=3, cutoff=SUGGEST_CUTOFF)
        if self.name == "composer" and label in COMPOSERS and not near:  # real, but too little of it to learn
            raise UserError(f"unknown composer {value!r}: not one this model learned; a composer needs at least "
                            f"{COMPOSER_MIN_HOURS:g} h of training music (train --composer_min_hours) to get a "
                            f"style of its own; known: {', '.join(known) or 'none'} (or `other`)")
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise UserError(f"unknown {self.name} {value!r}: {hint}known: {', '.join(known) or 'none'}")


# -- the five -----------------------------------------------------------------------------------


def _read_composer(meta, found):
    return normalize_composer(meta.get("composer"))


def _read_period(meta, found):
    period = normalize_period(meta.get("music_period") or meta.get("period"))
    if period is None and found.get("composer") in COMPOSERS:
        period = COMPOSERS[found["composer"]][1]
    return period


def _read_kind(meta, found):
    kind = normalize_kind(meta.get("kind"))
    if kind is None and ("file_id" in meta or "audio_score" in meta):  # Aria-MIDI: transcribed recordings
        kind = "performance"
    return kind


def _known(name: str, normalize, values):
    def parse(value):
        norm = normalize(value)
        if norm in values:
            return norm
        near = difflib.get_close_matches(fold(value), list(values), n=3, cutoff=SUGGEST_CUTOFF)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise UserError(f"unknown {name} {value!r}: {hint}known: {', '.join(values)}")
    return parse


def _parse_density(value) -> str:
    try:
        d = float(value)
    except (TypeError, ValueError):
        raise UserError(f"density {value!r}: expected notes per second, e.g. 8") from None
    if not (math.isfinite(d) and 0 < d <= 100):
        raise UserError(f"density {value!r}: expected notes per second, more than 0 and at most 100")
    return density_label(DENSITY_CENTERS[int(density_bin(clamp_density(d))) - 1])


def _list_composers(values, hours, cfg):
    h = hours.get("composer", {})
    shown = [f"{v} ({composer_display(v)}, {h[v]:.1f} h)" if v in h else v for v in values]
    return (f"composer (at least {cfg.get('composer_min_hours', COMPOSER_MIN_HOURS):g} h of training music; "
            "others are `other`):\n  " + "\n  ".join(shown))


def _list_hours(name):
    def listing(values, hours, cfg):
        h = hours.get(name)
        if h is None:
            return f"{name}: " + ", ".join(values)
        return f"{name}: " + ", ".join(f"{v} ({h[v]:.1f} h)" if v in h else v for v in values)
    return listing


CONDITIONS: tuple[Condition, ...] = (
    Condition("composer", "compose like this composer, e.g. chopin",
              lambda hours, min_hours: [OTHER, *sorted(c for c, h in hours.items() if h >= min_hours and c != OTHER)],
              lambda v: normalize_composer(v) or fold(v), normalize_composer, limits={"max_length": 64},
              read=_read_composer,
              score_help="score every file as this composer's", listing=_list_composers,
              display=composer_display),
    Condition("period", "baroque, classical, romantic, impressionist or modern", lambda hours, m: list(PERIODS),
              _known("period", normalize_period, PERIODS), normalize_period, limits={"max_length": 32},
              read=_read_period,
              score_help="... in this period", listing=_list_hours("period")),
    Condition("kind", "performance (a pianist's timing) or sequenced (score-like)", lambda hours, m: list(KINDS),
              _known("kind", normalize_kind, KINDS), normalize_kind, limits={"max_length": 32}, read=_read_kind,
              score_help="... as a performance or sequenced", listing=_list_hours("kind")),
    Condition("density", "notes per second, e.g. 8", lambda hours, m: [density_label(c) for c in DENSITY_CENTERS],
              _parse_density, type=float, limits={"gt": 0, "le": 100}, per_second=density_codes,
              listing=lambda values, hours, cfg: "density: notes per second, e.g. 2, 4, 8, 16 (bins: "
                                                 + ", ".join(values) + ")"),
    Condition("key", 'e.g. C, Am, "F# minor", "Eb major"', lambda hours, m: list(KEYS),
              lambda v: KEYS[parse_key(str(v))], limits={"max_length": 16}, per_second=key_codes,
              transpose=transpose_codes,
              listing=lambda values, hours, cfg: "key: any of the 24 major and minor keys, e.g. C, Am, F# minor, "
                                                 "Eb major"),
)
BY_NAME = {c.name: c for c in CONDITIONS}
NAMES = tuple(BY_NAME)
FILE_CONDITIONS = tuple(c.name for c in CONDITIONS if c.from_metadata)  # from metadata
EVENT_CONDITIONS = tuple(c.name for c in CONDITIONS if c.per_second)  # from the notes, per event


# -- what a file has ----------------------------------------------------------------------------


def file_conditions(meta: dict) -> dict[str, str | None]:
    """The metadata conditions of one file (None where unknown)."""
    meta, found = meta or {}, {}
    for c in CONDITIONS:
        if c.read:
            found[c.name] = c.read(meta, found)
    return found


def event_conditions(tokens: np.ndarray, tokenizer) -> np.ndarray:
    """[n, len(EVENT_CONDITIONS)] uint8: each event's code of each per-event condition, 0 where unknown."""
    out = np.zeros((len(tokens), len(EVENT_CONDITIONS)), np.uint8)
    found = onsets(tokens, tokenizer)
    if found is not None:
        sec, notes = found
        for k, name in enumerate(EVENT_CONDITIONS):
            out[:, k] = BY_NAME[name].per_second(notes)[sec]
    return out


def filter_form(name: str, value) -> str:
    """A metadata value as `data prepare`'s filters compare it: a condition's own normal form
    ("Frédéric Chopin" and "Chopin, Frédéric" -> chopin), else folded (case, accents, spaces)."""
    c = BY_NAME.get(name)
    return (c.normalize(value) if c and c.normalize else None) or fold(value)


# -- vocabularies and requests ------------------------------------------------------------------


def vocabularies(composer_hours: dict[str, float], min_hours: float = COMPOSER_MIN_HOURS,
                 names=NAMES) -> dict[str, list[str]]:
    """Each condition's labels, ANY first, for a model trained on music with these composer hours."""
    return {c.name: [ANY, *c.labels(composer_hours, min_hours)] for c in CONDITIONS if c.name in names}


def file_codes(vocab: dict[str, list[str]], **values) -> dict[str, int]:
    """Vocabulary indices of a file's normalised metadata (unknown composers -> other)."""
    out = {}
    for name in FILE_CONDITIONS:
        if name not in vocab:
            continue
        labels, value = vocab[name], values.get(name)
        if not value:
            out[name] = 0
        elif value in labels:
            out[name] = labels.index(value)
        else:
            out[name] = labels.index(OTHER) if OTHER in labels else 0
    return out


def parse_names(text: str | None, available) -> tuple[str, ...]:
    """--conditions "composer,period" / "all" / "none" -> the names, checked."""
    if text is None or fold(text) in ("all", "auto", ""):
        return tuple(n for n in NAMES if n in available)
    if fold(text) == "none":
        return ()
    names = tuple(dict.fromkeys(w.strip() for w in fold(text).split(",") if w.strip()))
    for n in names:
        if n not in NAMES:
            raise UserError(f"--conditions: unknown condition {n!r}; choose from {', '.join(NAMES)}, all or none")
    missing = [n for n in names if n not in available]
    if missing:
        raise UserError(f"--conditions {','.join(missing)}: the data has none (it knows {', '.join(available) or 'none'})")
    return tuple(n for n in NAMES if n in names)


def asked(style: dict | None) -> dict:
    """The conditions a request names (None, "" and "any" are not asked for)."""
    return {n: v for n, v in (style or {}).items()
            if n in BY_NAME and v is not None and not (isinstance(v, str) and fold(v) in ("", ANY))}


def parse_request(style: dict | None) -> dict[str, str]:
    """What a person asked for -> each condition's value (a label), checked once; one-line UserErrors."""
    return {n: BY_NAME[n].parse(v) for n, v in asked(style).items()}


def encode_request(vocab: dict[str, list[str]], parsed: dict[str, str] | None = None, **style) -> dict[str, int]:
    """A request (raw values, or parse_request's) -> vocabulary indices; UserErrors suggest known names."""
    raw = asked(style)
    for name in raw:
        if name not in vocab:
            raise UserError(f"this checkpoint has no {name} condition (it knows: {', '.join(vocab) or 'none'})")
    parsed = parse_request(raw) if parsed is None else parsed
    return {n: BY_NAME[n].index(raw.get(n, v), v, vocab[n]) for n, v in parsed.items() if n in vocab}


def describe(vocab: dict[str, list[str]], index: dict[str, int]) -> dict[str, str]:
    """Indices -> labels, for reports (ANY left out)."""
    return {n: vocab[n][i] for n, i in index.items() if i}


def listing(vocab: dict[str, list[str]], cfg: dict) -> str:
    """What --list_conditions prints: each condition's values, with training hours where known."""
    if not vocab:
        return "this checkpoint has no style conditions (it composes unconditioned)"
    hours = cfg.get("condition_hours", {})
    return "\n".join(BY_NAME[n].listing([v for v in labels if v != ANY], hours, cfg)
                     for n, labels in vocab.items() if n in BY_NAME)


# -- where the conditions meet the command line and the studio ------------------------------------


def add_arguments(group, *, scoring: bool = False) -> None:
    """--composer, --period, ... on `generate` (every condition), or on `evaluate` (scoring=True:
    the metadata ones, with their scoring help)."""
    for c in CONDITIONS:
        if scoring and not c.from_metadata:
            continue
        group.add_argument(f"--{c.name}", type=c.type, default=None, help=c.score_help if scoring else c.help)


def flags(names=NAMES) -> str:
    """"--composer, --period, ... or --key": for messages."""
    shown = [f"--{n}" for n in names]
    return ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else "".join(shown)


def menus() -> list[dict]:
    """The studio's style controls, in order: {"name", "menu": select | number, limits}."""
    return [{"name": c.name, "menu": c.menu, **({k: v for k, v in c.limits.items() if c.type is float})}
            for c in CONDITIONS]


__all__ = [
    "ANY", "BY_NAME", "COMPOSER_MIN_HOURS", "COMPOSERS", "CONDITIONS", "DENSITY_CENTERS", "DENSITY_MAX", "DENSITY_WINDOW",
    "OPENING_KEY", "OPENING_SECONDS", "SUGGEST_CUTOFF", "clamp_density", "draw_density", "model_deciles",
    "opening_block", "opening_density", "HOME_KEYS_KEY", "home_keys_block", "model_home_keys",
    "EVENT_CONDITIONS", "FILE_CONDITIONS", "KEYS", "KEY_WINDOW", "KINDS", "NAMES", "OTHER", "PERIODS", "PROFILES",
    "Condition", "Onsets", "add_arguments", "asked", "composer_display", "density_bin", "density_label", "describe",
    "encode_request", "estimate_key", "event_conditions", "file_codes", "file_conditions", "filter_form", "flags", "fold",
    "key_name", "key_use", "listing", "menus", "normalize_composer", "normalize_kind", "normalize_period", "note_durations",
    "parse_key", "parse_names", "parse_request", "relative_key", "transpose_key", "vocabularies", "window_sum",
]
