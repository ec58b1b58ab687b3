"""compose(): one request to events and notes, the path `generate`, the studio's jobs and
play-along all take (each then writes its own files).

    model + primer tokens + style + SamplingOptions (+ plans, memory) -> Composition
    Composition.pieces() -> each variation's Notes and pedal intervals, cut to the length asked
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..notes import Notes, trim_leading_silence
from .checkpoint import condition_codes
from .conductor import conduct, perform
from .options import SamplingOptions
from .sampling import END_AFTER, sample, steering


@dataclass
class Composition:
    rows: list  # each variation's new events (no primer)
    prefix: np.ndarray  # the primer's events
    plans: list | None  # each variation's plan when a conductor composed it, else None
    labels: dict  # the conditions as the model understood them (its first section's, when planned)
    seconds: float | None  # the piece's length in music seconds (the plan's, when planned)
    wall: float  # seconds spent sampling

    def pieces(self, tokenizer, primer_end: float = 0.0, keep_primer: bool = True, events: bool = False):
        """[(Notes, pedals)] per variation: decoded, performed by its plan (tempo, dynamics,
        pedal), cut to the length asked. Without a primer or plan a leading silence over a second
        goes (a safety net: the sampler already holds the first note's lead, sampling._Rows.prompt;
        a planned piece keeps its sections' times)."""
        out = []
        for i, new in enumerate(self.rows):
            whole, pedals = tokenizer.decode(np.concatenate([self.prefix, new])), []
            if self.plans is not None:
                whole, pedals = perform(whole, self.plans[i], tokenizer.steps_per_second, primer_end)
            if not keep_primer and len(self.prefix) > 1:
                keep = whole.onset >= primer_end - 1e-9
                whole = Notes(whole.onset[keep] - primer_end, whole.offset[keep] - primer_end, whole.pitch[keep],
                              whole.velocity[keep])
                pedals = [(a - primer_end, b - primer_end) for a, b in pedals]
            if self.seconds and not events:
                limit = self.seconds + (primer_end if keep_primer else 0.0)
                keep = whole.onset < limit
                whole = Notes(whole.onset[keep], np.minimum(whole.offset[keep], limit), whole.pitch[keep],
                              whole.velocity[keep])
            if len(self.prefix) <= 1 and self.plans is None:
                whole = trim_leading_silence(whole)[0]
            out.append((whole, pedals))
        return out


def compose(model, prefix: np.ndarray, *, seconds: float | None, events: int | None = None, num_samples: int = 1,
            seed: int, style: dict | None = None, parsed: dict | None = None,
            options: SamplingOptions | None = None, plans: list | None = None, asked_form: bool = False,
            memory=None, device: str = "cpu", int8: bool | None = None, min_seconds: float | None = None,
            progress=None) -> Composition:
    """Sample num_samples variations continuing `prefix` (its primer_tokens; [BOS] for none).

    style: the conditions asked ({name: value}, None = any); parsed: conditions.parse_request(style)
    when already checked. plans: each variation's plan (form.resolve_plan), conducted unless it is
    the through piece with no ending; asked_form: the user asked for a form, plan or ending (a
    tokenizer without time then refuses rather than composing through). memory: a memory.Memory.
    progress(fraction 0..1) after each step.
    """
    options = options or SamplingOptions()
    style = style or {}
    cond, labels = condition_codes(model, style, parsed) if any(v is not None for v in style.values()) else (None, {})
    conductor, codes, plan_labels = conduct(plans, model, prefix, style, options.steer, asked=asked_form)
    length = seconds
    if conductor is not None:
        length = plans[0].seconds
        if codes is not None:
            cond, labels = codes[:, 0], plan_labels
    held = steering(style, options.steer, parsed) if conductor is None else {}
    held.pop("steer", None)

    def report(n, total, music_s):
        if progress is not None:
            done = n / total if music_s is None or not seconds or events else music_s / seconds
            progress(min(max(done, 0.0), 1.0))

    t0 = time.perf_counter()
    rows = sample(model, model.tokenizer, prefix, options, num_samples=num_samples, events=events, seed=seed,
                  seconds=seconds if conductor is None else conductor.seconds, device=device, progress=report,
                  min_seconds=min_seconds, cond=cond, conductor=conductor, int8=int8,
                  memory=memory if memory is not None and memory.cache else None, **held,
                  # asked in events, the piece may end itself in the last fifth, as one asked in seconds
                  min_events=math.ceil(END_AFTER * events) if events and min_seconds is None else 0)
    return Composition(rows, prefix, plans if conductor is not None else None, labels, length,
                       time.perf_counter() - t0)
