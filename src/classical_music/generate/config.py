"""GenerateConfig: everything one `generate` run is asked for, and the checks that refuse a bad
request before the model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

import torch

from .. import conditions
from ..errors import UserError
from .checkpoint import check_device
from .form import ENDINGS, THROUGH, variation_plans
from .options import DEFAULT as SAMPLING, SamplingOptions
from .sampling import use_int8

DECODE_PRECISIONS = ("auto", "float32", "int8")
from ..memory import COMPOSING_MODES as MEMORY_MODES  # noqa: E402
# One piece is at most an hour of music, or as many events as sample() budgets for an hour:
# without a cap, --seconds 1e9 decodes for ever while its event lists grow.
MAX_SECONDS = 3600.0
MAX_EVENTS = 400 * 3600
# Variations are one batch: each is a row of state and a list of events, and a file or four
MAX_SAMPLES = 64


# style (classical_music.conditions): one field per condition, None = any (density in notes per
# second, key like "D minor")
StyleFields = make_dataclass("StyleFields", [(c.name, c.type | None, field(default=None)) for c in conditions.CONDITIONS])


@dataclass
class GenerateConfig(StyleFields):
    output: Path = Path("generated_song.mid")
    checkpoint: Path | None = None
    seconds: float | None = 30.0
    events: int | None = None
    # how each event is chosen: SamplingOptions' fields, with its defaults (cfg.sampling)
    temperature: float = SAMPLING.temperature
    top_k: int = SAMPLING.top_k
    top_p: float = SAMPLING.top_p
    min_p: float = SAMPLING.min_p
    seed: int | None = None
    num_samples: int = 1
    primer: Path | None = None
    primer_seconds: float | None = None
    primer_notes: str | None = None
    primer_chord_seconds: float = 0.5
    primer_in_output: bool = True
    max_note_seconds: float = SAMPLING.max_note_seconds
    release: float = SAMPLING.release
    min_seconds: float | None = None  # the model may end the piece after this; None: see end_allowed_after
    wav: bool = False
    mp3: bool = False
    plot: bool = False
    soundfont: Path | None = None
    piano: Path | None = None  # an SFZ instrument (default: the installed grand, see audio.instrument)
    reverb: float = 0.3  # the hall: 0 dry .. 1 a large hall (audio.room.DEFAULT_REVERB)
    device: str = "cpu"
    precision: str = "auto"  # of the decoding matmuls: auto = int8 on the CPU, else float32
    guidance: float = SAMPLING.guidance
    steer: float = SAMPLING.steer
    # the whole piece (form.py): a form such as "ABA" or "through" (None: through under 45 s, else
    # form.DEFAULT_LONG_FORM), or a plan file; the ending "cadence" or "none" (None: cadence when
    # the length is in seconds)
    form: str | None = None
    plan: Path | None = None
    ending: str | None = None
    # memory of the piece (classical_music.memory): None = the checkpoint's default; none or cache
    memory: str | None = None
    memory_theta: float | None = None
    memory_lambda: float | None = None
    memory_size: int | None = None
    memory_gap: int | None = None
    memory_events: str | None = None
    memory_register: float | None = None
    memory_recall: str | None = None

    def validate(self) -> None:
        self.sampling = SamplingOptions.pick(self).validate()
        if not 1 <= self.num_samples <= MAX_SAMPLES:
            raise UserError(f"--num_samples must be between 1 and {MAX_SAMPLES} (variations are composed together "
                            f"as one batch); run again with another --seed for more, got {self.num_samples}")
        if self.seconds is not None and not 0 < self.seconds < math.inf:
            raise UserError(f"--seconds must be a positive number, got {self.seconds}")
        if self.seconds is not None and self.seconds > MAX_SECONDS:
            raise UserError(f"--seconds must be at most {MAX_SECONDS:g} (one hour), got {self.seconds:g}")
        if self.min_seconds is not None and not 0 <= self.min_seconds < math.inf:
            raise UserError(f"--min_seconds must be >= 0, got {self.min_seconds}")
        if self.min_seconds and self.seconds and self.min_seconds > self.seconds:
            raise UserError(f"--min_seconds ({self.min_seconds:g}) must not exceed --seconds ({self.seconds:g})")
        if self.events is not None and not 1 <= self.events <= MAX_EVENTS:
            raise UserError(f"--events must be in 1 ... {MAX_EVENTS:,} (an hour of music), got {self.events}")
        if self.primer and self.primer_notes:
            raise UserError("give either --primer or --primer_notes, not both")
        if self.primer_seconds is not None and not self.primer_seconds > 0:
            raise UserError(f"--primer_seconds must be > 0, got {self.primer_seconds}")
        if self.primer_seconds is not None and not self.primer:
            raise UserError("--primer_seconds needs --primer FILE.mid (the piece whose opening to take)")
        if not 0 < self.primer_chord_seconds < math.inf:
            raise UserError(f"--primer_chord_seconds must be a positive number, got {self.primer_chord_seconds}")
        check_device(self.device)
        if self.precision not in DECODE_PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(DECODE_PRECISIONS)}, got {self.precision!r}")
        if self.precision == "int8" and not use_int8(self.device):
            raise UserError(f"--precision int8 runs on the CPU only, with PyTorch's int8 kernels: "
                            f"not on {self.device}" if torch.device(self.device).type != "cpu"
                            else "--precision int8: this PyTorch build has no int8 CPU kernels")
        if self.output.suffix.lower() not in (".mid", ".midi"):
            raise UserError(f"--output must end in .mid or .midi, got {self.output.name}")
        self.parsed_style = conditions.parse_request(self.style())  # a malformed style fails before the model loads
        if self.ending is not None and self.ending not in ENDINGS:
            raise UserError(f"--ending must be cadence or none, got {self.ending!r}")
        if self.form is not None and self.plan is not None:
            raise UserError("give either --form or --plan, not both")
        if self.events and (self.plan is not None or self.ending == "cadence"
                            or (self.form or THROUGH).strip().lower() != THROUGH):
            raise UserError("--form, --plan and --ending cadence plan a piece in seconds: use --seconds, not --events")
        if self.memory not in (None, *MEMORY_MODES):
            raise UserError(f"--memory must be one of {', '.join(MEMORY_MODES)} when composing, got {self.memory!r}")
        given = {k: v for k, v in (("theta", self.memory_theta), ("lam", self.memory_lambda), ("size", self.memory_size),
                                   ("gap", self.memory_gap), ("events", self.memory_events),
                                   ("register", self.memory_register), ("recall", self.memory_recall)) if v is not None}
        if given:
            from ..memory import Memory

            # checks them; a gap without a size is checked against the real size at the run (the block's)
            if "gap" in given and "size" not in given:
                gap = given.pop("gap")
                if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
                    raise UserError(f"--memory_gap must be an integer >= 0, got {gap!r}")
            Memory("cache", **({"events": "notes"} if {"register", "recall"} & set(given) and "events" not in given
                               else {}) | given)

    def piece_plans(self, seed: int, model=None) -> list | None:
        """Each variation's plan (form.resolve_plan); None for a plain --events run. With the model,
        a planned piece asked for no density draws one from its checkpoint (form.draws_density), and
        a piece asked for no key its home key from the checkpoint's music's keys (form.home_keys)."""
        if self.events:
            return None
        primed = self.primer is not None or self.primer_notes is not None
        return variation_plans(model, self.style(), primed, self.form, self.plan, self.seconds, self.key, self.density,
                               self.ending, seed, self.num_samples)

    def memory_options(self, model):
        """The memory.Memory this run composes with (flags, else the checkpoint's tuned block)."""
        from ..memory import composing

        return composing(model, self.memory, self.memory_theta, self.memory_lambda, self.memory_size,
                         self.memory_gap, self.memory_events, self.memory_register, self.memory_recall)

    def style(self) -> dict:
        return {n: getattr(self, n) for n in conditions.NAMES}
