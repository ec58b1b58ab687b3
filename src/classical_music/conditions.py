"""Style conditions, defined once for every stage: names, vocabularies, normalisation, estimation.

Five conditions steer the model. Three come from a file's metadata, two from its notes:

    composer  "Chopin, Frédéric" / "Frédéric Chopin" / "chopin" -> "chopin" (a checkpoint knows the
              composers with enough training music; the rest are "other")
    period    baroque, classical, romantic, impressionist, modern (Aria's music_period, else the
              composer's, from COMPOSERS below)
    kind      performance (a pianist's timing and dynamics) or sequenced (score-like)
    density   notes per second over DENSITY_WINDOW seconds around each event, in log-spaced bins
    key       one of 24 major/minor keys over KEY_WINDOW seconds around each event
              (Krumhansl-Schmuckler on a duration-weighted pitch-class profile)

Every vocabulary starts with ANY (index 0): unknown, or left out on purpose. Training drops each
condition at random (condition dropout) so any subset can be left at ANY when composing.
The cache stores per-file metadata strings and per-event (density, key) codes; a checkpoint's
config.json stores the vocabularies it was trained with, so indices never depend on the data.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata

import numpy as np

from .errors import UserError

NAMES = ("composer", "period", "kind", "density", "key")
FILE_CONDITIONS = ("composer", "period", "kind")  # from metadata
EVENT_CONDITIONS = ("density", "key")  # from the notes, per event
ANY = "any"
OTHER = "other"

PERIODS = ("baroque", "classical", "romantic", "impressionist", "modern")
KINDS = ("performance", "sequenced")

# A checkpoint knows a composer when it had at least this much training music (written in
# config.json as composer_min_hours); below that an embedding would learn mostly noise.
COMPOSER_MIN_HOURS = 1.0

# -- composers ----------------------------------------------------------------------------------

# surname key -> (display name, period). Covers every composer of the development corpus and the
# best-known piano composers of Aria-MIDI; a composer missing here still works, with an unknown
# period unless the metadata gives one.
COMPOSERS: dict[str, tuple[str, str]] = {
    "albeniz": ("Isaac Albéniz", "romantic"),
    "alkan": ("Charles-Valentin Alkan", "romantic"),
    "bach": ("Johann Sebastian Bach", "baroque"),
    "balakirev": ("Mily Balakirev", "romantic"),
    "bartok": ("Béla Bartók", "modern"),
    "beethoven": ("Ludwig van Beethoven", "classical"),
    "borodin": ("Alexander Borodin", "romantic"),
    "brahms": ("Johannes Brahms", "romantic"),
    "burgmueller": ("Friedrich Burgmüller", "romantic"),
    "busoni": ("Ferruccio Busoni", "romantic"),
    "chopin": ("Frédéric Chopin", "romantic"),
    "clementi": ("Muzio Clementi", "classical"),
    "couperin": ("François Couperin", "baroque"),
    "czerny": ("Carl Czerny", "classical"),
    "debussy": ("Claude Debussy", "impressionist"),
    "dussek": ("Jan Ladislav Dussek", "classical"),
    "dvorak": ("Antonín Dvořák", "romantic"),
    "faure": ("Gabriel Fauré", "romantic"),
    "field": ("John Field", "romantic"),
    "franck": ("César Franck", "romantic"),
    "gershwin": ("George Gershwin", "modern"),
    "glinka": ("Mikhail Glinka", "romantic"),
    "godowsky": ("Leopold Godowsky", "romantic"),
    "granados": ("Enrique Granados", "romantic"),
    "grieg": ("Edvard Grieg", "romantic"),
    "handel": ("George Frideric Handel", "baroque"),
    "haydn": ("Joseph Haydn", "classical"),
    "hummel": ("Johann Nepomuk Hummel", "classical"),
    "janacek": ("Leoš Janáček", "modern"),
    "joplin": ("Scott Joplin", "modern"),
    "kabalevsky": ("Dmitry Kabalevsky", "modern"),
    "liszt": ("Franz Liszt", "romantic"),
    "medtner": ("Nikolai Medtner", "modern"),
    "mendelssohn": ("Felix Mendelssohn", "romantic"),
    "messiaen": ("Olivier Messiaen", "modern"),
    "mompou": ("Federico Mompou", "modern"),
    "moszkowski": ("Moritz Moszkowski", "romantic"),
    "mozart": ("Wolfgang Amadeus Mozart", "classical"),
    "mussorgsky": ("Modest Mussorgsky", "romantic"),
    "poulenc": ("Francis Poulenc", "modern"),
    "prokofiev": ("Sergei Prokofiev", "modern"),
    "purcell": ("Henry Purcell", "baroque"),
    "rachmaninoff": ("Sergei Rachmaninoff", "romantic"),
    "rameau": ("Jean-Philippe Rameau", "baroque"),
    "ravel": ("Maurice Ravel", "impressionist"),
    "saint-saens": ("Camille Saint-Saëns", "romantic"),
    "satie": ("Erik Satie", "impressionist"),
    "scarlatti": ("Domenico Scarlatti", "baroque"),
    "schoenberg": ("Arnold Schoenberg", "modern"),
    "schubert": ("Franz Schubert", "romantic"),
    "schumann": ("Robert Schumann", "romantic"),
    "scriabin": ("Alexander Scriabin", "romantic"),
    "shostakovich": ("Dmitri Shostakovich", "modern"),
    "sinding": ("Christian Sinding", "romantic"),
    "smetana": ("Bedřich Smetana", "romantic"),
    "stravinsky": ("Igor Stravinsky", "modern"),
    "tchaikovsky": ("Pyotr Ilyich Tchaikovsky", "romantic"),
    "telemann": ("Georg Philipp Telemann", "baroque"),
    "weber": ("Carl Maria von Weber", "romantic"),
}
# Other spellings (after accents are stripped) -> surname key.
_ALIASES = {
    "burgmuller": "burgmueller", "rachmaninov": "rachmaninoff", "rachmaninow": "rachmaninoff",
    "rachmaninof": "rachmaninoff", "tchaikowsky": "tchaikovsky", "tschaikowsky": "tchaikovsky",
    "tschaikovsky": "tchaikovsky", "chaikovsky": "tchaikovsky", "moussorgsky": "mussorgsky",
    "musorgsky": "mussorgsky", "mussorgski": "mussorgsky", "skrjabin": "scriabin", "scriabine": "scriabin",
    "skryabin": "scriabin", "schonberg": "schoenberg", "haendel": "handel",
    "saens": "saint-saens", "prokofieff": "prokofiev", "prokofjew": "prokofiev",
    "schostakowitsch": "shostakovich", "strawinsky": "stravinsky",
}
# Values that name no composer.
_NO_COMPOSER = {"", "unknown", "anonymous", "anon", "various", "traditional", "trad", "none", "nan", "n/a"}


def fold(text: str) -> str:
    """Lower case, accents stripped, spaces collapsed: the form every comparison uses."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", text.replace("ß", "ss").casefold()).strip()


def normalize_composer(name) -> str | None:
    """The composer's surname key ("Chopin, Frédéric", "Frédéric Chopin", "chopin" -> "chopin"), or None."""
    if name is None:
        return None
    text = fold(name)
    if text in _NO_COMPOSER:
        return None
    if "," in text:  # "Surname, Given names"
        text = text.split(",", 1)[0]
    words = [w for w in re.split(r"[\s./]+", re.sub(r"[^\w\s./-]", "", text)) if w]
    if not words:
        return None
    key = words[-1].strip("-")
    if len(words) >= 2 and f"{words[-2]}-{key}" in COMPOSERS:  # "Saint Saens"
        key = f"{words[-2]}-{key}"
    return _ALIASES.get(key, key) or None


def composer_display(key: str) -> str:
    return COMPOSERS[key][0] if key in COMPOSERS else key.title()


_PERIOD_WORDS = {
    "baroque": "baroque", "classical": "classical", "classic": "classical", "classicism": "classical",
    "romantic": "romantic", "romanticism": "romantic", "late romantic": "romantic", "early romantic": "romantic",
    "impressionist": "impressionist", "impressionism": "impressionist", "impressionistic": "impressionist",
    "modern": "modern", "contemporary": "modern", "20th century": "modern", "twentieth century": "modern",
    "21st century": "modern", "post-romantic": "modern", "modernist": "modern", "modernism": "modern",
}


def normalize_period(value) -> str | None:
    if value is None:
        return None
    return _PERIOD_WORDS.get(fold(value).replace("_", " "))


def normalize_kind(value) -> str | None:
    if value is None:
        return None
    v = fold(value)
    if v in ("performance", "performed", "live", "transcription", "transcribed"):
        return "performance"
    if v in ("sequenced", "sequence", "score", "quantized", "quantised"):
        return "sequenced"
    return None


def file_conditions(meta: dict) -> dict[str, str | None]:
    """composer, period and kind of one file from its metadata (None where unknown).

    Aria-MIDI files (their meta carries an audio_score or a file_id) are transcribed recordings,
    hence performances; the period falls back on the composer's.
    """
    meta = meta or {}
    composer = normalize_composer(meta.get("composer"))
    period = normalize_period(meta.get("music_period") or meta.get("period"))
    if period is None and composer in COMPOSERS:
        period = COMPOSERS[composer][1]
    kind = normalize_kind(meta.get("kind"))
    if kind is None and ("file_id" in meta or "audio_score" in meta):
        kind = "performance"
    return {"composer": composer, "period": period, "kind": kind}


# -- density ------------------------------------------------------------------------------------

DENSITY_WINDOW = 5.0  # seconds around each event
# Bin centres 1, 1.4, 2, 2.8, 4, ... 32 notes/s (half-octave steps), so the requests people make
# (2, 4, 8, 16) sit at a bin's centre and a bin spans +-19 % around it.
DENSITY_CENTERS = tuple(round(2 ** (k / 2), 2) for k in range(11))
_DENSITY_EDGES = np.array([2 ** ((k + 0.5) / 2) for k in range(10)])


def density_label(c: float) -> str:
    return f"{c:g}"


def density_bin(notes_per_second) -> np.ndarray | int:
    """Vocabulary index (1 .. len(DENSITY_CENTERS)) of a density, or an array of them."""
    return np.searchsorted(_DENSITY_EDGES, notes_per_second, side="right") + 1


# -- keys ---------------------------------------------------------------------------------------

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


# -- per-event conditions from tokens -----------------------------------------------------------


def event_conditions(tokens: np.ndarray, tokenizer) -> np.ndarray:
    """[n, 2] uint8: each event's (density, key) vocabulary index, 0 where unknown.

    Computed from the events themselves (no metadata, no re-tokenizing): note onsets and
    durations are read off the token stream, binned per second, then summed over a window
    around each second (cumulative sums: linear in the file's length).
    """
    tokens = np.asarray(tokens, np.int64)
    n = len(tokens)
    out = np.zeros((n, 2), np.uint8)
    if n == 0 or getattr(tokenizer, "name", None) != "performance":
        return out
    tok = tokenizer
    sps = tok.steps_per_second
    step = np.cumsum(tok.shift_steps(tokens))  # time (steps) after each token
    sec = step // sps
    nsec = int(sec[-1]) + 1
    is_on = (tokens >= tok.note_on) & (tokens < tok.note_off)
    is_note = is_on | ((tokens >= tok.note_off) & (tokens < tok.time_shift))
    on_pos = np.flatnonzero(is_on)
    if len(on_pos) == 0:
        return out
    # Each key-down lasts until the next event of the same pitch (its key-up, or a re-strike).
    note_pos = np.flatnonzero(is_note)
    pitch = np.where(is_on, tokens - tok.note_on, tokens - tok.note_off)[note_pos]
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
    on_sec, on_pc = sec[pos_sorted[ons]], p_sorted[ons] % 12
    weight = np.clip(dur, 0.05, 2.0)

    # density: onsets per second over the window, divided by the window's length inside the file
    counts = np.bincount(on_sec, minlength=nsec).astype(np.float64)
    half = int(DENSITY_WINDOW // 2)
    dens = _window_sum(counts, half) / _window_sum(np.ones(nsec), half)
    out[:, 0] = density_bin(dens)[sec]

    # key: duration-weighted pitch-class histogram over the window
    hist = np.bincount(on_sec * 12 + on_pc, weights=weight, minlength=nsec * 12).reshape(nsec, 12)
    win = _window_sum(hist, int(KEY_WINDOW // 2))
    centred = win - win.mean(1, keepdims=True)
    keys = np.argmax(centred @ PROFILES.T, axis=1) + 1
    keys[~(np.abs(centred).sum(1) > 1e-9)] = 0  # no notes (or all twelve equally) nearby
    out[:, 1] = keys[sec]
    return out


def _window_sum(x: np.ndarray, half: int) -> np.ndarray:
    """Sum of x over [i - half, i + half] along axis 0, clipped at the ends."""
    c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    i = np.arange(len(x))
    return c[np.minimum(i + half + 1, len(x))] - c[np.maximum(i - half, 0)]


# -- vocabularies -------------------------------------------------------------------------------


def vocabularies(composer_hours: dict[str, float], min_hours: float = COMPOSER_MIN_HOURS,
                 names=NAMES) -> dict[str, list[str]]:
    """Each condition's labels, ANY first, for a model trained on music with these composer hours."""
    known = sorted(c for c, h in composer_hours.items() if h >= min_hours and c != OTHER)
    full = {
        "composer": [ANY, OTHER, *known],
        "period": [ANY, *PERIODS],
        "kind": [ANY, *KINDS],
        "density": [ANY, *(density_label(c) for c in DENSITY_CENTERS)],
        "key": [ANY, *KEYS],
    }
    return {n: full[n] for n in NAMES if n in names}


def file_codes(vocab: dict[str, list[str]], composer=None, period=None, kind=None) -> dict[str, int]:
    """Vocabulary indices of a file's normalised metadata (unknown composers -> other)."""
    out = {}
    for name, value in (("composer", composer), ("period", period), ("kind", kind)):
        if name not in vocab:
            continue
        labels = vocab[name]
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


def encode_request(vocab: dict[str, list[str]], composer=None, period=None, kind=None, density=None,
                   key=None) -> dict[str, int]:
    """What a person asked for -> vocabulary indices; one-line UserErrors that suggest known names."""
    asked = {"composer": composer, "period": period, "kind": kind, "density": density, "key": key}
    codes = {}
    for name, value in asked.items():
        if value is None or (isinstance(value, str) and fold(value) in ("", ANY)):
            continue
        if name not in vocab:
            have = ", ".join(vocab) or "none"
            raise UserError(f"this checkpoint has no {name} condition (it knows: {have})")
        labels = vocab[name]
        codes[name] = _encode_one(name, value, labels)
    return codes


def _encode_one(name: str, value, labels: list[str]) -> int:
    if name == "density":
        try:
            d = float(value)
        except (TypeError, ValueError):
            raise UserError(f"density {value!r}: expected notes per second, e.g. 8") from None
        if not (math.isfinite(d) and 0 < d <= 100):
            raise UserError(f"density {value!r}: expected notes per second, more than 0 and at most 100")
        return int(density_bin(d))
    if name == "key":
        return parse_key(str(value)) + 1
    if name == "composer":
        norm = normalize_composer(value)
        if norm in labels:  # "other" too: the composers with too little music to know apart
            return labels.index(norm)
        return _unknown(name, value, [c for c in labels if c not in (ANY, OTHER)])
    norm = (normalize_period if name == "period" else normalize_kind)(value)
    if norm in labels:
        return labels.index(norm)
    return _unknown(name, value, [c for c in labels if c != ANY])


def _unknown(name, value, known: list[str]):
    near = difflib.get_close_matches(fold(value), known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise UserError(f"unknown {name} {value!r}: {hint}known: {', '.join(known) or 'none'}")


def describe(vocab: dict[str, list[str]], index: dict[str, int]) -> dict[str, str]:
    """Indices -> labels, for reports (ANY left out)."""
    return {n: vocab[n][i] for n, i in index.items() if i}
