"""Composing a plan (form.py): sample()'s hook that walks each variation through its sections, and
the performance applied to the notes afterwards (tempo, ritardando, dynamics, the final pedal).

While sampling (Conductor, per row, in the model's own time):
  * each section asks the model for its conditions and steers its key and density (the same
    key hold and density controller as --steer, sampling.KeyHold / density_push);
  * a section whose letter was heard before opens with that section's opening phrase, transposed
    to its key, fed to the LSTM token by token (so its state is primed by it), then composes on;
  * each section's last seconds steer toward its dominant, then its tonic; the piece ends on the
    home tonic as the lowest note of a root-position chord, held, every other key released.
Afterwards (perform): each section's tempo and a ritardando over its cadence stretch the time
shifts (up to RITARDANDO), its dynamics scale the velocities with a diminuendo into each cadence,
and the pedal holds the last chord.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .. import conditions
from ..notes import LEAD_SECONDS, Notes
from .checkpoint import condition_codes
from .form import DYNAMICS, Plan
from .sampling import KeyHold, density_push, registered

RITARDANDO = 1.5  # time-shift stretch reached at the piece's end
INNER_RITARDANDO = 1.2  # at the end of the other sections
CADENCE_SECONDS = 4.0  # of the last section; others: INNER_CADENCE_SECONDS (each at most a fifth of it)
INNER_CADENCE_SECONDS = 2.5
DOMINANT_SHARE = 0.55  # of a cadence spent on the dominant before the tonic
# A planned section's key is held at this share of --steer (a --key through piece at all of it).
# With the Krumhansl profile as a fixed bonus (before sampling.KeyHold) full strength lowered 8 ABA
# pieces' pitch-class overlap with real music from 0.90 to 0.76, so sections had 0.8; held as real
# music uses the key (KeyHold's lean 0.8), full strength keeps 92-95 % of AABA section keys at an OA
# of 0.87; at 0.8 with a lean of 0.5, 85-86 % (docs/benchmarks.md, "Whole pieces").
SECTION_KEY_STEER = 1.0
CADENCE_GAIN = 1.2  # a cadence's chord-tone bonus: the chord's z-scores times this (at --steer 1)
DIMINUENDO = 0.7  # velocity scale reached at the piece's end (inner cadences: INNER_DIMINUENDO)
INNER_DIMINUENDO = 0.85
FINAL_HOLD = 1.6  # seconds the last chord rings at least (with the pedal down from just after it is struck)
FINAL_VELOCITY = 72
RECALL_SECONDS = 8.0  # opening phrase a return recalls; a varied return (A') half of it
RECALL_SHARE = 0.25  # at most this share of the section recalled
# A first hearing opens as a classical sentence does: its basic idea, then that idea again, then
# the continuation. Only in sections long enough to carry it; the repeat is at most RECALL_SHARE.
IDEA_SECONDS = 4.5
IDEA_FROM_SECONDS = 20.0
VARIED_TEMPERATURE = 1.15  # a varied return composes on a little warmer
PEDAL_LATE = 0.06  # seconds after the last chord's onset the pedal goes down
DYNAMICS_FADE = 1.5  # seconds over which one section's dynamics turn into the next's


@dataclass
class Span:
    """One section in the model's time: starts at `start` steps, lasts `length`, its last
    `cadence` steps a cadence; its real time is `tempo` x (ramping to `ritard` over the cadence).
    (Shared by all rows; each row's keys and densities are the Conductor's.)"""
    start: int
    length: int
    cadence: int
    tempo: float
    ritard: float
    dynamics: float
    diminuendo: float

    @property
    def end(self) -> int:
        return self.start + self.length


def timeline(plan: Plan, steps_per_second: int) -> list[Span]:
    """Each section's span of model time, so that after tempo and ritardando it lasts its seconds."""
    spans, t = [], 0
    cadence_on = plan.ending == "cadence"
    for i, s in enumerate(plan.sections):
        last = i == len(plan.sections) - 1
        c = min(CADENCE_SECONDS if last else INNER_CADENCE_SECONDS, 0.2 * s.seconds) if cadence_on else 0.0
        r = (RITARDANDO if last else INNER_RITARDANDO) if cadence_on else 1.0
        # real seconds = tempo * (L - k) + tempo * k * (1 + r) / 2, with k = c / tempo the cadence's steps
        k = round(c / s.tempo * steps_per_second)
        length = max(round(s.seconds / s.tempo * steps_per_second - k * (r - 1) / 2), k + 10)
        spans.append(Span(t, length, k, s.tempo, r, DYNAMICS[s.dynamics],
                          (DIMINUENDO if last else INNER_DIMINUENDO) if cadence_on else 1.0))
        t += spans[-1].length
    return spans


def _ramp(x: np.ndarray, span: Span) -> np.ndarray:
    """0 before the cadence, rising to 1 at the span's end (x: steps into the span)."""
    if span.cadence <= 0:
        return np.zeros_like(x, dtype=np.float64)
    return np.clip((x - (span.length - span.cadence)) / span.cadence, 0.0, 1.0)


def warp(t: np.ndarray, spans: list[Span], steps_per_second: int) -> np.ndarray:
    """Model time (seconds after the primer) -> real seconds, with each span's tempo and ritardando."""
    t = np.asarray(t, np.float64) * steps_per_second
    out = np.zeros_like(t)
    real = 0.0
    for i, s in enumerate(spans):
        x = np.clip(t - s.start, 0, None if i == len(spans) - 1 else s.length)
        inside = (t >= s.start) if i else np.ones_like(t, bool)
        flat = np.minimum(x, s.length - s.cadence)
        ramped = np.clip(x - (s.length - s.cadence), 0, s.cadence)
        over = np.clip(x - s.length, 0, None)
        local = s.tempo * (flat + ramped + (s.ritard - 1) * ramped ** 2 / max(2 * s.cadence, 1)
                           + (s.ritard - 1) * over)
        out = np.where(inside, real + local, out)
        real += s.tempo * (s.length + (s.ritard - 1) * s.cadence / 2)
    out = np.where(t < 0, t, out)  # the primer keeps its own time
    return out / steps_per_second


def perform(notes: Notes, plan: Plan, steps_per_second: int, primer_end: float = 0.0) -> tuple[Notes, list]:
    """The plan's tempo, ritardandi and dynamics applied to composed notes (times after
    primer_end are the model's); returns the notes and the pedal intervals [(down, up)] to add."""
    spans = timeline(plan, steps_per_second)
    rel_on = notes.onset - primer_end
    onset = np.where(rel_on >= 0, primer_end + warp(rel_on, spans, steps_per_second), notes.onset)
    rel_off = notes.offset - primer_end
    offset = np.where(rel_off >= 0, primer_end + warp(rel_off, spans, steps_per_second), notes.offset)
    # dynamics: each section's level, faded into the next, times its diminuendo
    u = rel_on * steps_per_second
    level = np.ones(len(notes))
    for i, s in enumerate(spans):
        x = u - s.start
        target = s.dynamics * (1 - (1 - s.diminuendo) * _ramp(x, s))
        if i:
            prev = spans[i - 1]
            end_level = prev.dynamics * prev.diminuendo
            fade = np.clip(x / (DYNAMICS_FADE * steps_per_second), 0, 1)
            target = end_level + (target - end_level) * fade
        level = np.where((u >= s.start) | (i == 0), target, level)
    level = np.where(u >= 0, level, 1.0)
    velocity = np.clip(np.round(notes.velocity * level), 1, 127).astype(np.int16)
    out = Notes(onset, np.maximum(offset, onset), notes.pitch, velocity)
    pedal = []
    if plan.ending == "cadence" and len(out):
        # down just after the last chord is struck (a legato pedal), so the keys let go at that
        # instant are not caught by it
        last = out.onset.max()
        up = min(float(out.offset[out.onset >= last - 1e-6].max()), primer_end + plan.seconds)  # the piece's end
        if last + PEDAL_LATE < up:
            pedal.append((float(last) + PEDAL_LATE, up))
    return out, pedal


def final_chord(key: int) -> list[int]:
    """The home tonic in root position: the root low (C2 .. B2), its octave, fifth and third above."""
    root = 36 + key % 12
    third = 3 if key >= 12 else 4
    return [root, root + 12, root + 19, root + 24 + third]


def chord_profile(pitch_classes, gain: float) -> np.ndarray:
    """A logit bonus over the 128 keys for these pitch classes (z-scored, like a key profile; its
    raises held to the register, as a key's are)."""
    v = np.zeros(12)
    v[list(pitch_classes)] = 1.0
    z = (v - v.mean()) / v.std() * gain
    return registered(z[np.arange(128) % 12])


def transpose_phrase(tokens: list[int], tokenizer, semitones: int, lo: int = 21, hi: int = 108) -> list[int]:
    """A phrase's tokens with every key moved by `semitones` (an octave back where that would leave
    the piano), key-ups of keys it never struck dropped and no end token: ready to be replayed."""
    on, off = tokenizer.key_downs.start, tokenizer.key_ups.start
    down, out = set(), []
    for t in tokens:
        if on <= t < off or off <= t < off + 128:
            base = on if t < off else off
            p = t - base + semitones
            while p > hi and p - 12 >= 0:
                p -= 12
            while p < lo and p + 12 <= 127:
                p += 12
            if base == off:
                if p not in down:
                    continue
                down.discard(p)
            else:
                down.add(p)
            out.append(base + p)
        elif t != tokenizer.eos_id and t != tokenizer.bos_id and t != tokenizer.pad_id:
            out.append(t)
    return out


def opening_phrase(history: list[int], start: int, tokenizer, steps: int) -> list[int]:
    """The tokens from the first key-down at or after history[start] until `steps` of time have
    passed, led by the velocity in force there (so the phrase sounds as it did)."""
    on = tokenizer.key_downs
    start = next((i for i in range(start, len(history)) if on.start <= history[i] < on.stop), len(history))
    shift = tokenizer.shift_steps(np.asarray(history[start:], np.int64))
    elapsed = np.cumsum(shift)
    # (all of what there is when that is shorter: a section's idea repeated while still being composed)
    n = min(int(np.searchsorted(elapsed, steps, side="left")) + 1, len(shift))
    phrase = history[start:start + n]
    if phrase and elapsed[n - 1] > steps:  # its last wait cut to the phrase's length
        phrase[-1] -= int(elapsed[n - 1] - steps)
    vel = tokenizer.velocities
    for t in reversed(history[:start]):
        if vel.start <= t < vel.stop:
            phrase = [t, *phrase]
            break
    return phrase


class Conductor:
    """sample()'s hook for a plan: start(keys), then per step shape(scores, elapsed) before the draw,
    update(row, token, elapsed) after it, and cond() for a changed style (None: unchanged)."""

    def __init__(self, plans: list[Plan], tokenizer, prefix: np.ndarray, codes=None, steer: float = 1.0):
        # one plan per row: the same sections and timing, each its own keys and densities
        self.plans, self.tok = plans, tokenizer
        self.plan = plan = plans[0]
        self.sps = tokenizer.steps_per_second
        self.spans = timeline(plan, self.sps)
        self.total = self.spans[-1].end
        self.codes = codes  # [rows, sections, n] condition indices, or None
        self.steer = steer
        self.cadence = plan.ending == "cadence"
        n = len(plans)
        primer = [int(t) for t in np.asarray(prefix).tolist() if t != tokenizer.bos_id]
        self.history = [list(primer) for _ in range(n)]
        self.starts = [[0] for _ in range(n)]  # per row: history index where each section began
        self.section = [0] * n
        self.queue = [deque() for _ in range(n)]
        self.forced = [False] * n
        self.warm = [False] * n  # a varied return composing on at VARIED_TEMPERATURE
        self.idea_at = [None] * n  # when the section's basic idea is heard again (steps), if it will be
        self.phase = [None] * n  # None, "V" or "I": where in its section's cadence a row is
        # each row's section keys (a through piece asked for none finds its own)
        self.keys_of = [[None if s.key is None else conditions.parse_key(s.key) for s in p.sections] for p in plans]
        self.density_of = [[s.density for s in p.sections] for p in plans]  # and densities (notes/s)
        self.onsets, self.since_onsets, self.since = [0] * n, [0] * n, [0] * n
        # the last chord is struck at least FINAL_HOLD before the end (in real time: the ritardando only lengthens it)
        self.hold = math.ceil(FINAL_HOLD / self.spans[-1].tempo * self.sps)
        self.final_from = self.total - self.hold - math.ceil(1.2 * self.sps)
        self.ended = [False] * n
        self.changed = False
        vocab = tokenizer.vocab_size
        self.on, self.vel, self.wait = tokenizer.key_downs, tokenizer.velocities, tokenizer.time_shifts
        # A piece without a primer strikes its first note within LEAD_SECONDS of real time: in the
        # model's time that is the first section's tempo's share (sample() holds it, _Rows.prompt).
        self.lead_steps = None if primer else math.floor(LEAD_SECONDS / self.spans[0].tempo * self.sps)
        self.bonus = np.zeros((n, vocab), np.float32)
        self.key_hold = KeyHold(n, primer, tokenizer)  # each row's section key, held as real music uses it
        self.keybonus = [np.zeros(128, np.float32) for _ in range(n)]  # the key's bonus, or a cadence's chord
        self.push = [0.0] * n  # the density controller's last push on key-downs
        self.keys = None
        for row in range(n):
            self._enter(row, 0, 0)

    @property
    def seconds(self) -> float:
        """sample()'s length in the model's time; with an ending a second more, so every row ends
        on its final chord's end token rather than on the clock."""
        return self.total / self.sps + (1.0 if self.cadence else 0.0)

    # -- sample()'s hook ------------------------------------------------------------------------

    def start(self, keys) -> None:
        self.keys = keys  # KeyTracker: which keys are down, to release them before a recall

    def shape(self, scores: np.ndarray, elapsed: list[int]) -> None:
        for row in range(len(scores)):
            if self.queue[row]:
                scores[row] = -np.inf
                scores[row, self.queue[row][0]] = 0.0
                continue
            scores[row] += self.bonus[row]
            if self.cadence:
                scores[row, self.tok.eos_id] = -np.inf  # the piece ends with its final chord
            if self.warm[row]:
                scores[row] *= 1.0 / VARIED_TEMPERATURE

    def update(self, row: int, token: int, now: int) -> None:
        self.history[row].append(token)
        if self.queue[row] and self.queue[row][0] == token:
            self.queue[row].popleft()
        if self.ended[row]:
            return
        i = self.section[row]
        while i + 1 < len(self.spans) and now >= self.spans[i + 1].start:
            i += 1
            self._enter(row, i, now)
        if self.on.start <= token < self.on.stop:
            self.onsets[row] += 1
            self.key_hold.played(row, token - self.on.start)
            if self.phase[row] is None and self.key_hold.key[row] is not None:
                self.keybonus[row] = self.key_hold.bonus[row]
                self.bonus[row, self.on] = self.keybonus[row] + self.push[row]
        if self.cadence and now >= self.final_from:
            self.queue[row].clear()  # a recall still playing gives way to the ending
            self._final(row, now)
            return
        if self.idea_at[row] is not None and now >= self.idea_at[row] and not self.queue[row]:
            self._repeat_idea(row, i)
        self._steer(row, now)

    def cond(self):
        """The rows' condition indices [rows, n] after a section change, else None."""
        if not self.changed or self.codes is None:
            self.changed = False
            return None
        self.changed = False
        return self.codes[torch.arange(len(self.section)), torch.tensor(self.section)]

    # -- sections -------------------------------------------------------------------------------

    def _enter(self, row: int, i: int, now: int) -> None:
        self.section[row] = i
        self.changed = self.changed or i > 0
        self.since[row], self.since_onsets[row] = now, self.onsets[row]
        self.phase[row] = None
        self.warm[row] = False
        if i == 0:
            self.starts[row][0] = 0
        else:
            self.starts[row].append(len(self.history[row]))
        self._set_key(row, self.keys_of[row][i])
        self.bonus[row, self.vel] = self.bonus[row, self.wait] = 0.0  # a section without a density is not held to the last one's
        s = self.plan.sections[i]
        first = next(j for j, o in enumerate(self.plan.sections) if o.letter == s.letter)
        self.idea_at[row] = None
        if first < i:
            self._recall(row, i, first)
            self.warm[row] = s.varied
        elif not self.plan.through and s.seconds >= IDEA_FROM_SECONDS:
            span = self.spans[i]
            due = now + round(IDEA_SECONDS / span.tempo * self.sps)
            if due + round(IDEA_SECONDS / span.tempo * self.sps) < span.end - span.cadence:
                self.idea_at[row] = due

    def _repeat_idea(self, row: int, i: int) -> None:
        """The section's opening IDEA_SECONDS again, as it was played (keys still down go up first)."""
        self.idea_at[row] = None
        steps = round(min(IDEA_SECONDS, RECALL_SHARE * self.plan.sections[i].seconds) / self.spans[i].tempo * self.sps)
        phrase = opening_phrase(self.history[row], self.starts[row][i], self.tok, steps)
        held = [] if self.keys is None else sorted(self.keys.since[row])
        self.queue[row].extend([self.tok.key_ups.start + k for k in held] + transpose_phrase(phrase, self.tok, 0))

    def _recall(self, row: int, i: int, src: int) -> None:
        seconds = min(RECALL_SECONDS / (2 if self.plan.sections[i].varied else 1),
                      RECALL_SHARE * self.plan.sections[i].seconds)
        steps = round(seconds / self.spans[i].tempo * self.sps)
        phrase = opening_phrase(self.history[row], self.starts[row][src], self.tok, steps)
        a, b = self.keys_of[row][src], self.keys_of[row][i]
        semis = 0 if a is None or b is None else ((b - a) % 12 + 5) % 12 - 5  # the nearer way, -5 ... +6
        held = [] if self.keys is None else sorted(self.keys.since[row])
        self.queue[row].extend([self.tok.key_ups.start + k for k in held] + transpose_phrase(phrase, self.tok, semis))

    def _set_key(self, row: int, key: int | None) -> None:
        strength = self.steer * (1.0 if self.plan.through else SECTION_KEY_STEER)
        self.key_hold.set(row, key, strength)
        self.keybonus[row] = self.key_hold.bonus[row].copy()
        self.push[row] = 0.0
        self.bonus[row, self.on] = self.keybonus[row]

    def _steer(self, row: int, now: int) -> None:
        span = self.spans[self.section[row]]
        if self.cadence and span.cadence and now >= span.end - span.cadence:
            phase = "V" if now < span.end - span.cadence * (1 - DOMINANT_SHARE) else "I"
            if phase != self.phase[row]:
                self.phase[row] = phase
                key = self._key_now(row)
                if key is not None:
                    tonic = key % 12
                    pcs = [(tonic + d) % 12 for d in ((7, 11, 2, 5) if phase == "V" else (0, 3 if key >= 12 else 4, 7))]
                    self.keybonus[row] = chord_profile(pcs, CADENCE_GAIN * max(self.steer, 1.0))
                    self.bonus[row, self.on] = self.keybonus[row]
        density = self.density_of[row][self.section[row]]
        if density and self.steer:
            want = density * max((now - self.since[row]) / self.sps, 1.0)
            # a second's notes of allowance: with one note's, a dense section's first second (14 notes
            # due, none played) pushed key-downs by ~16 logits, a burst of chords up to the keyboard's top
            push = density_push(self.onsets[row] - self.since_onsets[row], want, self.steer, max(density, 1.0))
            self.push[row] = push
            self.bonus[row, self.on] = self.keybonus[row] + push
            self.bonus[row, self.vel] = push
            self.bonus[row, self.wait] = 0.0 if push == -np.inf else -push

    def _key_now(self, row: int) -> int | None:
        """The section's key, or (a through piece asked for none) the key of the last 16 s."""
        i = self.section[row]
        if self.keys_of[row][i] is None:
            toks = np.asarray(self.history[row][self.starts[row][i]:], np.int64)
            t = np.cumsum(self.tok.shift_steps(toks))
            on = (toks >= self.on.start) & (toks < self.on.stop) & (t >= t[-1] - conditions.KEY_WINDOW * self.sps)
            self.keys_of[row][i] = conditions.estimate_key(toks[on] - self.on.start)
        return self.keys_of[row][i]

    def _final(self, row: int, now: int) -> None:
        """Every key up, the home tonic chord, held to the end, released; then the end token."""
        home = self.plans[row].home_key
        key = conditions.parse_key(home) if home else self._key_now(row)
        if key is None:
            key = 0
        held = [] if self.keys is None else sorted(self.keys.since[row])
        tok = self.tok
        chord = final_chord(key)
        wait = max(self.total - now - 1, self.hold)
        down, up = tok.key_downs.start, tok.key_ups.start
        self.queue[row].extend([up + k for k in held] + [tok.velocity_token(FINAL_VELOCITY)]
                               + [down + p for p in chord] + tok.wait_tokens(wait)
                               + [up + p for p in chord] + [tok.eos_id])
        self.ended[row] = True
        self.bonus[row] = 0.0


def conduct(plans: list[Plan] | None, model, prefix, style: dict, steer: float = 1.0, asked: bool = True):
    """The Conductor that composes each variation's plan for sample(), each one's sections'
    condition indices ([variations, sections, n], None for an unconditioned model) and the first
    one's first section's condition labels; (None, None, {}) where the plan is the through piece
    with no ending (sample() as it always ran). style: the
    conditions asked for the whole run; asked: whether the user asked for a form, plan or ending
    (a tokenizer without time then is an error rather than composing as before)."""
    # the through piece with no ending samples as it always has, unless its key was drawn (the
    # checkpoint's home keys, form.home_keys): sample()'s steering holds only a key asked for
    drawn = plans is not None and style.get("key") is None and any(p.home_key for p in plans)
    if plans is None or (plans[0].through and plans[0].ending == "none" and not drawn):
        return None, None, {}
    tok = model.tokenizer
    if not tok.timed:
        if not asked:
            return None, None, {}  # a tokenizer without time (REMI) composes as it always has
        tok.require_timed("--form, --plan and --ending cadence")
    coded = [[condition_codes(model, _section_style(s, style, model)) for s in p.sections] for p in plans]
    codes = None if coded[0][0][0] is None else torch.stack([torch.stack([c for c, _ in row]) for row in coded])
    return Conductor(plans, tok, prefix, codes, steer), codes, coded[0][0][1]


def _section_style(section, style: dict, model) -> dict:
    """A section's conditions for the model; a key or density the plan chose (not the user) that
    the model has no condition for is left to steering alone."""
    out = section.style(style)
    for name in ("key", "density"):
        if name not in model.config.conditions and style.get(name) is None:
            out[name] = None
    return out
