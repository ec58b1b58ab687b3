"""The plan of a whole piece: its sections (label, seconds, key, density, style, dynamics, tempo).

    --form ABA      a default plan: A in the home key, B in a related key with another density and
                    dynamics, returns in the home key and a little shorter; A' is a varied return
    --plan P.json   [{"label": "A", "seconds": 40, "key": "D major", "dynamics": "mf"}, ...]
    --form through  one section, today's behaviour (with --ending cadence it still ends)

A plan is checked whole before the model loads: a bad one is one line (UserError).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import conditions
from ..errors import UserError

THROUGH = "through"
FORMS = ("through", "A", "AB", "ABA", "AABA", "ABACA")  # the named ones; any letter string works
ENDINGS = ("cadence", "none")
# Pieces shorter than this are composed through by default; longer ones in DEFAULT_LONG_FORM,
# the form bench/form.py measured best (docs/benchmarks.md, "Whole pieces").
THROUGH_UNDER_SECONDS = 45.0
DEFAULT_LONG_FORM = "AABA"
MAX_PLAN_SECONDS = 3600.0
MAX_SECTIONS = 64
# Velocity scale of each dynamic relative to what the model plays (mf).
DYNAMICS = {"pp": 0.5, "p": 0.66, "mp": 0.83, "mf": 1.0, "f": 1.17, "ff": 1.33}
TEMPO_RANGE = (0.5, 2.0)  # time-stretch factors a section may ask for (> 1 slower)
# A return's share of a first hearing's length, and of a varied return's (A'): a full-length
# return recalls more (up to RECALL_SHARE of it), and recurrence was what forms lacked most.
RETURN_WEIGHT = 1.0
VARIED_WEIGHT = 0.7
_LABEL = re.compile(r"^[A-Z]'*$")
_FORM = re.compile(r"^([A-Z]'*)+$")


@dataclass
class Section:
    label: str
    seconds: float
    key: str | None = None  # a key name (conditions.parse_key reads it); None = whatever the model plays
    density: float | None = None  # notes per second; None = the model's own
    composer: str | None = None
    period: str | None = None
    dynamics: str = "mf"
    tempo: float = 1.0  # time-stretch factor: 1.2 plays this section 20 % slower

    @property
    def letter(self) -> str:
        return self.label.rstrip("'")

    @property
    def varied(self) -> bool:
        return self.label.endswith("'")

    def style(self, base: dict) -> dict:
        """The conditions this section asks the model for: the run's style, overridden here."""
        out = dict(base)
        for name in ("key", "density", "composer", "period"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass
class Plan:
    form: str
    sections: list[Section]
    ending: str = "cadence"
    home_key: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(s.seconds for s in self.sections))

    @property
    def through(self) -> bool:
        return self.form == THROUGH

    def to_json(self) -> dict:
        return {"form": self.form, "home_key": self.home_key, "ending": self.ending, "seconds": round(self.seconds, 3),
                "sections": [{k: v for k, v in asdict(s).items() if v is not None} for s in self.sections]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    def bands(self, primer: float = 0.0) -> list[tuple[str, float, float]]:
        """(label, start, end) of each section in seconds, for piano rolls: after `primer` seconds of
        primer, which opens the first section."""
        out, t = [], primer
        for s in self.sections:
            out.append((s.label, 0.0 if not out else t, t + s.seconds))
            t += s.seconds
        return out


def _key_index(text, where: str) -> int:
    try:
        return conditions.parse_key(str(text))
    except UserError:
        raise UserError(f"{where}: key {text!r} does not parse: write a key like C, Am, F# minor or Eb major") from None


def related_keys(home: int) -> list[int]:
    """Keys for B, C, D, ... after A in `home` (conditions.KEYS indices): the dominant of a major
    key, the relative major of a minor one, then the subdominant, then the relative."""
    if home < 12:
        return [conditions.transpose_key(home, 7), conditions.transpose_key(home, 5), conditions.relative_key(home)]
    return [conditions.relative_key(home), conditions.transpose_key(home, 5), conditions.transpose_key(home, 7)]


def draw_home_key(seed: int, variation: int = 0, weights=None) -> int:
    """A home key drawn by the seed (each variation its own): any of the 24, or by these weights
    (conditions.model_home_keys: the keys of the checkpoint's music)."""
    rng = np.random.default_rng([int(seed) % 2**32, 23, variation])
    if weights is None:
        return int(rng.integers(len(conditions.KEYS)))
    return int(rng.choice(len(conditions.KEYS), p=np.asarray(weights, np.float64)))


def _contrast(density: float | None, i: int) -> float | None:
    """Another section's density: sparser for B, denser for C, ... (None: left to the model)."""
    if density is None:
        return None
    return round(density * (0.6, 1.4, 0.8)[(i - 1) % 3], 2)


_CONTRAST_DYNAMICS = ("p", "f", "mp")


def default_plan(form: str, seconds: float, home_key: int | None, density: float | None = None,
                 ending: str = "cadence") -> Plan:
    """--form FORM as a plan of `seconds` in all (keys as conditions.KEYS indices)."""
    form = form.strip()
    if form.lower() == THROUGH:
        key = None if home_key is None else conditions.key_name(home_key)
        return Plan(THROUGH, [Section(THROUGH, float(seconds), key=key, density=density)], ending, key)
    if not _FORM.match(form):
        raise UserError(f"--form {form!r}: write section letters such as ABA, AABA, ABACA or AB "
                        "(A' for a varied return), or through")
    labels = re.findall(r"[A-Z]'*", form)
    _check_labels(labels, "--form")
    if len(labels) > MAX_SECTIONS:
        raise UserError(f"--form has {len(labels)} sections, at most {MAX_SECTIONS}")
    letters = list(dict.fromkeys(lab.rstrip("'") for lab in labels))
    others = related_keys(home_key)
    seen, weights = set(), []
    for lab in labels:
        weights.append(1.0 if lab.rstrip("'") not in seen else VARIED_WEIGHT if lab.endswith("'") else RETURN_WEIGHT)
        seen.add(lab.rstrip("'"))
    share = np.array(weights) / sum(weights) * seconds
    sections = []
    for lab, s in zip(labels, share):
        i = letters.index(lab.rstrip("'"))
        key = home_key if i == 0 else others[(i - 1) % len(others)]
        sections.append(Section(lab, round(float(s), 2), key=conditions.key_name(key),
                                density=density if i == 0 else _contrast(density, i),
                                dynamics="mf" if i == 0 else _CONTRAST_DYNAMICS[(i - 1) % 3]))
    sections[-1].seconds = round(seconds - sum(s.seconds for s in sections[:-1]), 2)
    return Plan(form, sections, ending, conditions.key_name(home_key))


def _check_labels(labels: list[str], where: str) -> None:
    seen = set()
    for lab in labels:
        if lab.endswith("'") and lab.rstrip("'") not in seen:
            raise UserError(f"{where}: {lab} is a varied return of {lab.rstrip(chr(39))}, which comes later or not at all")
        seen.add(lab.rstrip("'"))


_FIELDS = {f.name for f in fields(Section)}


def load_plan(path: Path, ending: str = "cadence") -> Plan:
    """--plan PLAN.json: a list of sections, or {"sections": [...], "home_key": ...}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--plan {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--plan {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"--plan {path} is not JSON: {e.msg} at line {e.lineno}") from None
    return plan_from_json(data, ending, where=f"--plan {path.name}")


def plan_from_json(data, ending: str = "cadence", where: str = "plan") -> Plan:
    if isinstance(data, dict):
        unknown = set(data) - {"sections", "form", "home_key", "ending", "seconds"}
        if unknown:
            raise UserError(f"{where}: unknown field {sorted(unknown)[0]!r} (a plan has sections, form, home_key)")
        sections = data.get("sections")
        if data.get("ending") is not None:
            ending = data["ending"]
    else:
        sections = data
    if not isinstance(sections, list) or not sections:
        raise UserError(f"{where}: expected a list of sections like [{{\"label\": \"A\", \"seconds\": 40}}, ...]")
    if len(sections) > MAX_SECTIONS:
        raise UserError(f"{where} has {len(sections)} sections, at most {MAX_SECTIONS}")
    if ending not in ENDINGS:
        raise UserError(f"{where}: ending {ending!r}: choose cadence or none")
    out = [_section(s, f"{where}, section {i + 1}") for i, s in enumerate(sections)]
    labels = [s.label for s in out]
    if THROUGH in labels and len(labels) > 1:
        raise UserError(f"{where}: a through section is the whole piece; it cannot share a plan with others")
    if THROUGH not in labels:
        _check_labels(labels, where)
    total = sum(s.seconds for s in out)
    if total > MAX_PLAN_SECONDS:
        raise UserError(f"{where}: the sections add up to {total:g} s, over the limit of {MAX_PLAN_SECONDS:g} (one hour)")
    home = data.get("home_key") if isinstance(data, dict) else None
    if home is not None:
        home = conditions.key_name(_key_index(home, f"{where}, home_key"))
    keyed = [s.key for s in out if s.letter == out[0].letter and s.key]
    return Plan(THROUGH if labels == [THROUGH] else "".join(labels), out, ending, home or (keyed[0] if keyed else None))


def _section(raw, where: str) -> Section:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected an object with label and seconds")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise UserError(f"{where}: unknown field {sorted(unknown)[0]!r} (known: {', '.join(sorted(_FIELDS))})")
    label = raw.get("label")
    if not isinstance(label, str) or not (_LABEL.match(label.strip()) or label.strip().lower() == THROUGH):
        raise UserError(f"{where}: unknown label {label!r}: use a capital letter (A, B, C, ...), A' for a "
                        "varied return, or through")
    label = label.strip() if label.strip().lower() != THROUGH else THROUGH
    seconds = _number(raw.get("seconds"), f"{where} ({label}): seconds")
    if not seconds > 0:
        raise UserError(f"{where} ({label}): seconds must be more than 0, got {seconds:g}")
    key = raw.get("key")
    if key is not None:
        key = conditions.key_name(_key_index(key, f"{where} ({label})"))
    density = raw.get("density")
    if density is not None:
        density = _number(density, f"{where} ({label}): density")
        if not 0 < density <= 100:
            raise UserError(f"{where} ({label}): density must be in (0, 100] notes per second, got {density:g}")
    dynamics = raw.get("dynamics", "mf")
    if dynamics not in DYNAMICS:
        raise UserError(f"{where} ({label}): dynamics {dynamics!r}: choose one of {', '.join(DYNAMICS)}")
    tempo = _number(raw.get("tempo", 1.0), f"{where} ({label}): tempo")
    if not TEMPO_RANGE[0] <= tempo <= TEMPO_RANGE[1]:
        raise UserError(f"{where} ({label}): tempo is a time-stretch factor in {TEMPO_RANGE[0]:g} ... "
                        f"{TEMPO_RANGE[1]:g} (1.2 = 20 % slower), got {tempo:g}")
    for name in ("composer", "period"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise UserError(f"{where} ({label}): {name} must be a name, got {raw[name]!r}")
    return Section(label, seconds, key=key, density=density, composer=raw.get("composer"), period=raw.get("period"),
                   dynamics=dynamics, tempo=tempo)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where} must be a number, got {value!r}")
    return float(value)


def draws_density(style: dict, primed: bool) -> bool:
    """Whether a planned piece asked for no density draws one (resolve_plan): not when something
    asked already implies its pace: a composer, period or kind (Liszt is not Satie) or a primer,
    whose pace the piece continues."""
    return not primed and all(style.get(n) is None for n in ("composer", "period", "kind"))


def density_deciles(model, style: dict, primed: bool):
    """What resolve_plan draws a planned piece's density from: the checkpoint's deciles
    (conditions.model_deciles) where draws_density allows, else None (no model: None)."""
    return conditions.model_deciles(model) if model is not None and draws_density(style, primed) else None


def home_keys(model, primed: bool):
    """What resolve_plan draws a home key from: the checkpoint's music's keys
    (conditions.model_home_keys), or None: none stored, no model, or a primer (a through piece then
    continues the primer's key; a planned one draws from all 24, as it did before home keys)."""
    return None if model is None or primed else conditions.model_home_keys(model)


def variation_plans(model, style: dict, primed: bool, form: str | None, plan_path: Path | None,
                    seconds: float | None, key: str | None, density: float | None, ending: str | None, seed: int,
                    num_samples: int) -> list[Plan]:
    """Each variation's plan (resolve_plan), with the density and home key drawn from what the
    checkpoint knows of its music (density_deciles, home_keys), as `generate` and the studio make them."""
    deciles, keys = density_deciles(model, style, primed), home_keys(model, primed)
    return [resolve_plan(form, plan_path, seconds, key, density, ending, seed, i, deciles, keys)
            for i in range(num_samples)]


def resolve_plan(form: str | None, plan_path: Path | None, seconds: float | None, key: str | None,
                 density: float | None, ending: str | None, seed: int, variation: int = 0,
                 deciles=None, keys=None) -> Plan:
    """What a run composes: --plan, else --form (default: through under THROUGH_UNDER_SECONDS,
    DEFAULT_LONG_FORM above), with the home key and density from --key and --density or drawn by
    the seed (variations share the form, the timing and the density, each draws its own key; the
    density from `deciles`, conditions.model_deciles, none drawn without them; the key from `keys`,
    home_keys, else any of the 24). A through piece keeps the model's own density unless asked,
    and its own key unless asked or `keys` are given. A plan file's sections without a key or
    density take --key and --density (or are left to the model)."""
    ending = ending or "cadence"
    if plan_path is not None:
        plan = load_plan(plan_path, ending)
        # --key and --density fill the sections that set none, held there as the plan's own
        named = None if key is None else conditions.key_name(conditions.parse_key(key))
        for s in plan.sections:
            s.key = s.key if s.key is not None else named
            s.density = s.density if s.density is not None else density
        plan.home_key = plan.home_key or plan.sections[0].key
        return plan
    if form is None:
        form = THROUGH if not seconds or seconds < THROUGH_UNDER_SECONDS else DEFAULT_LONG_FORM
    home = conditions.parse_key(key) if key is not None else None
    through = form.strip().lower() == THROUGH
    if home is None and (keys is not None or not through):
        home = draw_home_key(seed, variation, keys)
    if not through:
        if density is None and deciles:  # the model's own leans dense (conditions.density, OPENING_KEY)
            density = conditions.draw_density(seed, deciles)
    return default_plan(form, seconds or 30.0, home, density, ending)
