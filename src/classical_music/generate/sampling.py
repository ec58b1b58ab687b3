"""Sampling: one LSTM step per event for the whole batch, with the grammar rules of KeyTracker,
truncation (top-k, top-p, min-p), classifier-free guidance and density/key steering applied to
the logits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from .. import conditions
from ..errors import UserError
from ..notes import LEAD_SECONDS
from .options import SamplingOptions
from .primer import prime

END_AFTER = 0.8  # share of --seconds before the model may end a piece itself (KeyTracker)
# Steering gains (sample's steer_*): a piece one e-fold behind its density gets ~e^1 more key-downs.
STEER_DENSITY_GAIN = 6.0
# A key is held by feedback (KeyHold): each key-down's pitch class is pushed by the log-ratio of how
# often real music in the key uses it (conditions.key_use) to how often the piece's recent notes did,
# plus a constant lean on the key's use. 8 pieces of 30 s in each of six keys at three seeds
# (bench/key_use.py): all in the key asked for, their notes' use of it 0.96 alike with real music's,
# the tonic 25 % / 21 % of notes in major / minor (real: 24 % / 20 %); the Krumhansl profile as a
# fixed bonus before: 99 %, 0.69 and 47 % / 46 % (a drone on the tonic). Planned sections
# (bench/form.py, AABA, three seed sets): 92-95 % of section keys, recurrence 0.136-0.159, OA
# 0.869-0.873 (before: 93-97 %, 0.138-0.156, 0.853-0.854).
# A lean of 0.5 kept 85-90 % of section keys; faster feedback (decay 0.97, gain 3) changed more of
# what the model would repeat (AABA recurrence 0.133).
KEY_HOLD_GAIN = 2.0
KEY_HOLD_LEAN = 0.8
KEY_HOLD_DECAY = 0.99  # per key-down: the last ~100 notes are "recent"
KEY_HOLD_PRIOR = 8.0  # notes' worth of the key's own use assumed before the piece has played any
KEY_HOLD_CAP = 2.0  # logits, either way
STEER_AHEAD = 1.1  # more key-downs than this share of the schedule (+2) waits for time to pass
# A key's bonus raises its notes only within C2 ... C6, fading out over half an octave beyond: over
# the whole keyboard it lifted in-key notes at the ends that the model gave little chance to, and 32
# planned 120-s pieces' top 5 % of pitches rose from MIDI 88 (no key bonus) to 96 (real music: 83),
# their pitch overlap with the valid split 0.88 -> 0.83; held to C2 ... C6, 0.90 with keys held as
# well (docs/benchmarks.md, "Whole pieces"). Notes out of key are still lowered everywhere.
STEER_REGISTER = (36, 84)
STEER_REGISTER_FADE = 6
_p = np.arange(128)
REGISTER_WEIGHT = (np.clip(1 - np.maximum(_p - STEER_REGISTER[1], 0) / STEER_REGISTER_FADE, 0, 1)
                   * np.clip(1 - np.maximum(STEER_REGISTER[0] - _p, 0) / STEER_REGISTER_FADE, 0, 1)).astype(np.float32)
del _p
# Release pressure (sample's `release`, KeyTracker): the LSTM's memory of which keys are down fades
# over a piece (it trained on 256-event windows; 30 s is ~1,500 events), and the shipped model's
# pieces drifted to 20-40 keys sounding at once (a tenth of the time over 23; the corpus's 90th
# percentile is 8, pedal folded in) with 3.5 % of notes over 4 s (corpus 0.6 %). So a held key's
# release gains RELEASE_HOLD_GAIN logits per second it has rung past RELEASE_HOLD_SECONDS, and every
# held key's gains RELEASE_POLY_GAIN per key down beyond RELEASE_POLYPHONY: the model still chooses
# which key comes up and when, as a pianist's ten fingers and one pedal do.
RELEASE_HOLD_SECONDS = 1.5
RELEASE_HOLD_GAIN = 2.0
RELEASE_POLYPHONY = 8
RELEASE_POLY_GAIN = 0.5


def steering(style: dict | None, strength: float = 1.0, parsed: dict | None = None) -> dict:
    """sample()'s steer_* arguments for a style's density and key (none asked: no steering);
    parsed: conditions.parse_request(style), when already checked."""
    style = style or {}
    parsed = conditions.parse_request(style) if parsed is None else parsed
    density = style.get("density")
    return {"steer": strength, "steer_density": None if density is None else conditions.clamp_density(density),
            "steer_key": conditions.KEYS.index(parsed["key"]) if "key" in parsed else None}


def key_bonus(key: int, strength: float = 1.0, recent: np.ndarray | None = None) -> np.ndarray:
    """The logit bonus over the 128 key-downs that holds a key (conditions.KEYS index) after these
    recent pitch-class counts (None: none yet), raising notes only in the register (registered())."""
    use = conditions.key_use(key)
    recent = np.zeros(12) if recent is None else recent
    have = (recent + KEY_HOLD_PRIOR * use) / (recent.sum() + KEY_HOLD_PRIOR)
    log_use = np.log(use)
    feedback = np.clip(np.log(use / have), -KEY_HOLD_CAP, KEY_HOLD_CAP)
    z = strength * (KEY_HOLD_LEAN * (log_use - log_use.mean()) + KEY_HOLD_GAIN * feedback)
    # as much chance of a key-down as before (within the register: above and below it the raises
    # are dropped), played as the piece has been playing: a key moves notes between pitch classes,
    # it does not add notes (without this, 30-s pieces 1.3x as dense)
    z -= np.log(np.dot(have, np.exp(z)))
    return registered(z[np.arange(128) % 12])


class KeyHold:
    """Each row's key held to how real music uses it (key_bonus): set(row, key, strength) at the
    start or a new section, played(row, pitch) after each key-down; `bonus` [rows, 128] is current.
    The recent counts carry across a change of key, so a modulation is steered from where it is;
    `primer` (tokens) counts a primer's key-downs as the piece's first notes."""

    def __init__(self, rows: int, primer=None, tokenizer=None):
        self.key: list[int | None] = [None] * rows
        self.strength = [0.0] * rows
        self.recent = np.zeros((rows, 12))
        self.bonus = np.zeros((rows, 128), np.float32)
        if primer is not None and len(primer) and getattr(tokenizer, "timed", False):
            down, _, pitch = tokenizer.key_events(primer)
            pitch = pitch[down]
            w = KEY_HOLD_DECAY ** np.arange(len(pitch))[::-1]  # as played() would have decayed them
            self.recent[:] = np.bincount(pitch % 12, weights=w, minlength=12)

    def set(self, row: int, key: int | None, strength: float) -> None:
        self.key[row], self.strength[row] = key, strength
        self._refresh(row)

    def played(self, row: int, pitch: int) -> None:
        self.recent[row] *= KEY_HOLD_DECAY
        self.recent[row, pitch % 12] += 1.0
        if self.key[row] is not None:
            self._refresh(row)

    def _refresh(self, row: int) -> None:
        k, s = self.key[row], self.strength[row]
        self.bonus[row] = key_bonus(k, s, self.recent[row]) if k is not None and s else 0.0


def registered(bonus: np.ndarray) -> np.ndarray:
    """A pitch bonus over the 128 keys with its raises held to STEER_REGISTER (its lowerings kept)."""
    return np.where(bonus > 0, bonus * REGISTER_WEIGHT, bonus).astype(np.float32)


def density_push(onsets: int, want: float, strength: float = 1.0, allowance: float = 1.0) -> float:
    """The density controller's logit push on key-downs and velocities (minus on waits) for a piece
    with `onsets` key-downs where `want` were due: -inf (wait for time to pass) well ahead of it.
    allowance: key-downs counted on both sides, so the first ones due are not pushed for as hard."""
    gap = min(max(math.log((want + allowance) / (onsets + allowance)), -4.0), 4.0)
    push = strength * STEER_DENSITY_GAIN * gap
    # Well ahead of the schedule, no new key-down until time catches up: a soft malus alone let a
    # model in full flow overshoot 2 notes/s by half again.
    if onsets > STEER_AHEAD * want + 2:
        push = -np.inf
    return push


def filter_logits(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """Temperature, then top-k, nucleus (top-p) and min-p truncation; returns log-probabilities."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if min_p > 0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))
    if top_p < 1:
        sorted_logits, idx = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), float("-inf"))
    return logits.log_softmax(-1)


class KeyTracker:
    """Which keys are down and until when, for the grammar of Performance events.

    Rules applied to the logits before sampling (the model's likelihood, as `evaluate`
    measures it, is untouched):

    * never release a key that is not down. To the decoder that is a no-op, but a small model
      spends over half its NOTE_OFFs that way (measured: 54 % on an early default model) and leaves
      the keys it did strike ringing;
    * a key held for `max_hold_steps` must come up next. Real playing almost never holds a key,
      pedal included, beyond ~12 s (99.9th percentile of the shared corpus); without this rule
      an undertrained model leaves a few notes sounding to the end of the piece;
    * with `release` > 0, keys held long, or many at once, are nudged up (RELEASE_*): a bonus on
      their key-ups, so the texture stays one a pianist could play;
    * no key struck twice at one instant (the first note would last 0 s: ~1 % of an early
      model's notes were such blips);
    * no end token before the continuation's first key-down: a primer that ends a piece
      (silence, keys up) otherwise often draws it at once, and the "continuation" is nothing;
    * and none before step `end_from`: the shipped model, at temperature 0.8, ended 14 of 96
      pieces asked for 30 s before 25 s (9 with under 30 notes), so by default the piece may end
      itself only in the last fifth of --seconds (`end_allowed_after`, --min_seconds).

    All but the second are `bias`, an additive mask (0 / -inf, and the release bonuses) kept up
    to date token by token; the second is a dict per row of key -> step it must come up by.
    Updates are plain Python on one row at a time: a few hundred nanoseconds, where array
    operations cost microseconds.
    """

    def __init__(self, tokenizer, prefix: np.ndarray, bias: np.ndarray, max_hold_steps: int = 0, end_from: int = 0,
                 release: float = 0.0):
        self.on, self.off = tokenizer.key_downs.start, tokenizer.key_ups.start
        self.bias = bias  # [batch, vocab], shared with the sampler
        self.bias[:, self.off:self.off + 128] = -np.inf
        self.due = [{} for _ in range(len(bias))]  # per row: key -> step by which it must come up
        self.since = [{} for _ in range(len(bias))]  # per row: key -> step it went down
        sps = tokenizer.steps_per_second
        self.release = float(release)
        self.hold_free = RELEASE_HOLD_SECONDS * sps  # in steps
        self.hold_gain = self.release * RELEASE_HOLD_GAIN / sps  # per step
        self.poly_gain = self.release * RELEASE_POLY_GAIN
        self.next_due = [math.inf] * len(bias)  # per row: a lower bound of min(due), exact when passed
        self.max_hold = int(max_hold_steps) or math.inf
        self.struck = [[] for _ in range(len(bias))]  # per row: keys struck at the current instant
        self.now = [None] * len(bias)
        self.eos = tokenizer.eos_id
        self.end_from = end_from
        self.started = [False] * len(bias)  # per row: a key-down since the primer
        # The primer's keys still down, timed so that the continuation starts at step 0.
        prefix = np.asarray(prefix, dtype=np.int64)
        times = np.cumsum(tokenizer.shift_steps(prefix))
        for tok, t in zip(prefix.tolist(), (times - (times[-1] if len(times) else 0)).tolist()):
            for row in range(len(bias)):
                self.update(row, tok, t)
        self.bias[:, self.eos] = -np.inf  # after the primer: its key-downs do not count
        self.started = [False] * len(bias)

    def update(self, row: int, token: int, now: int) -> None:
        moved = now != self.now[row]
        if moved:  # time moved on: those keys may be struck again
            for key in self.struck[row]:
                self.bias[row, self.on + key] = 0.0
            self.struck[row].clear()
            self.now[row] = now
            if now >= self.end_from and self.started[row]:
                self.bias[row, self.eos] = 0.0
        key = token - self.on
        if 0 <= key < 128:
            self.due[row][key] = due = now + self.max_hold
            self.since[row][key] = now
            self.next_due[row] = min(self.next_due[row], due)
            self.bias[row, self.off + key] = 0.0
            self.bias[row, token] = -np.inf
            self.struck[row].append(key)
            self.started[row] = True
            if now >= self.end_from:
                self.bias[row, self.eos] = 0.0
        elif 0 <= token - self.off < 128:
            self.due[row].pop(token - self.off, None)
            self.since[row].pop(token - self.off, None)
            self.bias[row, token] = -np.inf
        elif not moved:
            return  # a velocity or the end: no key and no time changed
        if self.release:
            self._press(row, now)

    def _press(self, row: int, now: int) -> None:
        """The release bonuses of the keys row holds at step `now`."""
        since = self.since[row]
        crowd = self.poly_gain * max(0, len(since) - RELEASE_POLYPHONY)
        for key, t0 in since.items():
            if t0 < now:  # a key struck at this instant stays free of it: its note would last 0 s
                self.bias[row, self.off + key] = crowd + self.hold_gain * max(0, now - t0 - self.hold_free)

    def force_overdue(self, scores: np.ndarray, now: list[int]) -> None:
        """A row holding a key past its time may only release one (chosen uniformly): rare."""
        for row, t in enumerate(now):
            if t >= self.next_due[row]:
                due = self.due[row]
                self.next_due[row] = min(due.values(), default=math.inf)
                overdue = [self.off + k for k, d in due.items() if d <= t]
                if overdue:
                    scores[row] = -np.inf
                    scores[row, overdue] = 0.0


def use_int8(device) -> bool:
    """int8 decoding where it pays: on the CPU, when this PyTorch has the kernels."""
    from ..decoding import int8_available

    return torch.device(device).type == "cpu" and int8_available()


def _draw(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of unnormalised log-probabilities: argmax(scores + Gumbel noise).

    The Gumbel-max trick draws from softmax(scores), and per step it is cheaper than an inverse
    CDF (measured: 4 us vs 10 us at batch 1, 18 vs 25 at batch 8). A float32 exponential is
    exactly 0 about once in 10^7 draws, and -log 0 would let any token win, even a 1e-13 one; the
    floor of 2^-23 caps the noise at 15.9 instead, changing only a tail of probability ~1e-7.
    """
    if np.isnan(scores.sum()):  # argmax would pick a NaN; logits are never +inf, so -inf + inf cannot be
        raise UserError("the model's output is NaN: the checkpoint is broken")
    e = rng.standard_exponential(scores.shape, dtype=np.float32)
    np.maximum(e, np.finfo(np.float32).eps, out=e)
    scores -= np.log(e, out=e)
    return scores.argmax(1)


def end_allowed_after(seconds: float | None, events: int | None, min_seconds: float | None) -> float:
    """Seconds of music before the model may end the piece itself: min_seconds, by default
    END_AFTER of a length in seconds (none when the length is in events)."""
    if min_seconds is not None:
        return min_seconds
    return END_AFTER * seconds if seconds and not events else 0.0


class Steering:
    """Density and key held while sampling (sample's steer_*): key-downs get the key's bonus
    (KeyHold), and a bonus or malus that follows the gap between the onsets so far and the density
    asked for (an integral controller, so a piece's average lands on the request)."""

    def __init__(self, tokenizer, rows: int, vocab: int, density: float | None, key: int | None, strength: float,
                 primer=None):
        self.scores = np.zeros((rows, vocab), np.float32)
        self.on, self.sps = tokenizer.key_downs, tokenizer.steps_per_second
        self.hold = KeyHold(rows, primer, tokenizer)
        for row in range(rows):
            self.hold.set(row, key, strength)
        self.scores[:, self.on] = self.hold.bonus
        # A velocity token all but forces a key-down and a time shift postpones one: the density
        # term pushes both ends, or a model deep in a chord would play on through any malus.
        self.vel, self.wait = tokenizer.velocities, tokenizer.time_shifts
        self.density, self.key, self.strength = density, key, strength
        self.onsets = [0] * rows
        self.push = [0.0] * rows

    def update(self, row: int, tok: int, elapsed: int) -> None:
        down = self.on.start <= tok < self.on.stop
        if down and self.key is not None:
            self.hold.played(row, tok - self.on.start)
            self.scores[row, self.on] = self.hold.bonus[row] + self.push[row]
        if not self.density:
            return
        self.onsets[row] += down
        self.push[row] = push = density_push(self.onsets[row], self.density * max(elapsed / self.sps, 1.0),
                                             self.strength)
        self.scores[row, self.on] = self.hold.bonus[row] + push
        self.scores[row, self.vel] = push
        self.scores[row, self.wait] = 0.0 if push == -np.inf else -push


class _Stepper:
    """One decoding step for the batch; with guidance, each row's unconditioned twin runs beside it
    and the step returns u + guidance * (c - u) (classifier-free guidance, Ho & Salimans 2022)."""

    def __init__(self, decoder, cond, guidance: float):
        self.decoder, self.guided, self.guidance = decoder, cond is not None and guidance != 1.0, guidance
        self.condition(cond)

    def condition(self, cond) -> None:
        self.terms = self.decoder.conditioning(torch.cat([cond, torch.zeros_like(cond)]) if self.guided else cond)

    def guide(self, logits):  # conditioned rows first, their unconditioned twins after
        if not self.guided:
            return logits
        lc, lu = torch.log_softmax(logits.float(), -1).chunk(2)
        return lu + self.guidance * (lc - lu)

    def __call__(self, idx, state):
        if not self.guided:
            return self.decoder.step(idx, state, self.terms)
        logits, state = self.decoder.step(torch.cat([idx, idx]), state, self.terms)
        return self.guide(logits), state


@torch.inference_mode()
def sample(model, tokenizer, prefix: np.ndarray, options: SamplingOptions | None = None, *, num_samples=1,
           seconds=None, events=None, seed=None, device="cpu", progress=None, min_seconds=None,
           int8: bool | None = None, cond=None, steer_density: float | None = None, steer_key: int | None = None,
           min_events: int = 0, conductor=None, memory=None, **option_fields) -> list[np.ndarray]:
    """Continue `prefix` in num_samples variations; returns each one's new tokens (no prefix).

    options: a SamplingOptions (temperature, truncation, release, guidance, steer ...); keywords
    named like its fields override it (sample(..., temperature=0.9)).
    With a timed tokenizer (key and time events), keys are released only if down, and none is held
    over options.max_note_seconds (0 = no limit), keys held long or many at once are nudged up with
    strength options.release, and the end token waits for a first key-down and
    end_allowed_after(seconds, events, min_seconds) of music and min_events events; see KeyTracker.
    int8: decode with int8 weights (default: on the CPU; see decoding.StepDecoder).

    cond: style condition indices, [n] or [num_samples, n] (condition_codes); None = all "any".
    steer_density (notes/s), steer_key (conditions.KEYS index): held while sampling (Steering) with
    strength options.steer (0 = the model alone).
    conductor: a planned piece's hook (conductor.Conductor): it shapes each step's scores (its
    sections' steering, the tokens it replays or forces) and may change the conditions.
    memory: a memory.Memory whose cache (the piece's own past, primer included) mixes into each
    step's distribution before the grammar, steering, temperature and truncation; None or mode
    none: the model alone.
    progress(n, max_events, music seconds or None) after each step.

    The model runs on `device`; choosing each next event runs on the CPU in NumPy and plain
    Python, where a step's bookkeeping costs ~20 us instead of ~100 us as PyTorch calls.
    """
    opt = replace(options or SamplingOptions(), **option_fields) if option_fields else (options or SamplingOptions())
    rng = np.random.default_rng(None if seed is None else int(seed) % 2**64)  # any int, negatives too
    model.eval()
    n_cond = len(model.config.conditions)
    if cond is not None:
        cond = torch.as_tensor(cond, dtype=torch.long, device=device).reshape(-1, n_cond).expand(num_samples, -1)
    guided = cond is not None and opt.guidance != 1.0
    cache = None
    if memory is not None and memory.cache:
        from ..memory import StepCache, key_downs

        cache = StepCache(memory, num_samples, model.config.hidden_size, model.config.vocab_size, device,
                          proposes=key_downs(tokenizer))
    logits, state = prime(model, prefix, 2 * num_samples if guided else num_samples, device,
                          cond=torch.cat([cond, torch.zeros_like(cond)]) if guided else cond,
                          on_hidden=None if cache is None else (lambda h, s: cache.push_many(
                              h[:num_samples], _next_events(prefix, s, h.shape[1], num_samples, device))))
    from ..decoding import step_decoder

    step = _Stepper(step_decoder(model, int8=use_int8(device) if int8 is None else int8), cond, opt.guidance)
    logits = step.guide(logits)
    rows = _Rows(tokenizer, prefix, opt, num_samples, logits.shape[-1], seconds, events, min_seconds, min_events,
                 steer_density, steer_key, conductor)
    plain = not (opt.top_k or opt.top_p < 1 or opt.min_p > 0)
    for n in range(rows.max_events):
        if cache is not None:  # the top layer's h is the state's last layer ([B, H], stacked or listed)
            logits = cache.mix(logits, state[0][-1][:num_samples])
        scores = rows.scores(logits, n)
        if plain:
            if opt.temperature != 1:
                scores *= 1.0 / opt.temperature
        else:
            scores = filter_logits(torch.from_numpy(scores), opt.temperature, opt.top_k, opt.top_p, opt.min_p).numpy()
        before = scores.copy() if rows.lead is not None else None  # _draw adds its noise in place
        nxt = rows.prompt(_draw(scores, rng), before, rng)
        finished = rows.advance(nxt)
        if progress:
            progress(n + 1, rows.max_events, rows.seconds())
        if finished:
            break
        if conductor is not None and (changed := conductor.cond()) is not None:
            step.condition(changed.to(device))
        idx = torch.from_numpy(nxt).to(device)
        if cache is not None:
            cache.observe(idx)
        logits, state = step(idx, state)
    return rows.events()


class _Rows:
    """Each variation's events so far and the grammar kept on them while sampling: the tokens never
    drawn (pad, BOS), keys released only if down and none held too long (KeyTracker), the end
    token's earliest step, held density and key (Steering), the length limit and a conductor's
    plan, the first note's lead. scores() shapes a step's logits, prompt() redraws an opening wait
    held too long, advance() takes the drawn events."""

    def __init__(self, tokenizer, prefix, opt: SamplingOptions, num_samples: int, vocab: int, seconds, events,
                 min_seconds, min_events: int, steer_density, steer_key, conductor):
        self.bias = np.zeros((num_samples, vocab), np.float32)  # added to the logits: -inf = never
        self.bias[:, [tokenizer.pad_id, tokenizer.bos_id]] = -np.inf
        self.sps = tokenizer.steps_per_second
        self.timed = tokenizer.timed
        self.shift = self.keys = self.steering = None
        if self.timed:
            self.shift = tokenizer.shift_steps(np.arange(vocab)).tolist()
            self.keys = KeyTracker(tokenizer, prefix, self.bias, max_hold_steps=round(opt.max_note_seconds * self.sps),
                                   release=opt.release,
                                   end_from=math.ceil(end_allowed_after(seconds, events, min_seconds) * self.sps))
            if opt.steer and (steer_density or steer_key is not None):
                self.steering = Steering(tokenizer, num_samples, vocab, steer_density, steer_key, opt.steer, prefix)
        # Without a time signal in the tokens (REMI), bound the length by a generous event budget.
        self.max_events = events or int((seconds or 30) * (400 if self.timed else 1000))
        self.limit = seconds * self.sps if (seconds and self.timed and not events) else math.inf
        self.min_events, self.eos, self.conductor = min_events, tokenizer.eos_id, conductor
        self.out: list[list[int]] = [[] for _ in range(num_samples)]
        self.elapsed = [0] * num_samples
        self.done = [False] * num_samples
        # A piece without a primer strikes its first note within LEAD_SECONDS (issue 27: one 6-s
        # piece began with 3.26 s of silence, and trimming it afterwards shortened the piece). A
        # drawn wait that would pass that is drawn again without such waits, so a piece that starts
        # promptly is untouched to the byte. A plan's lead is in its first section's tempo.
        if conductor is not None:
            self.lead = conductor.lead_steps
        else:
            self.lead = math.floor(LEAD_SECONDS * self.sps) if self.timed and len(prefix) <= 1 else None
        if self.lead is not None:
            self.waits = np.asarray(self.shift)
            self.downs = tokenizer.key_events(np.arange(vocab))[0].tolist()
            self.started = [False] * num_samples
        if conductor is not None:
            conductor.start(self.keys)

    def scores(self, logits: torch.Tensor, n: int) -> np.ndarray:
        """Step n's logits [rows, V] -> NumPy scores with the grammar, steering and plan applied."""
        scores = logits.float().cpu().numpy() + self.bias
        if self.steering is not None:
            scores += self.steering.scores
        if self.keys is not None:
            self.keys.force_overdue(scores, self.elapsed)
        if n < self.min_events:
            scores[:, self.eos] = -np.inf
        if self.conductor is not None:
            self.conductor.shape(scores, self.elapsed)
        return scores

    def prompt(self, nxt: np.ndarray, scores: np.ndarray | None, rng) -> np.ndarray:
        """nxt with each drawn wait that would keep a row silent past its lead drawn again."""
        if self.lead is None:
            return nxt
        for row, tok in enumerate(nxt.tolist()):
            if self.started[row] or self.done[row] or self.elapsed[row] + self.waits[tok] <= self.lead:
                continue
            again = scores[row].copy()
            again[self.waits > self.lead - self.elapsed[row]] = -np.inf
            if np.isfinite(again).any():  # truncation may have left nothing but waits: then it waits
                nxt[row] = _draw(again[None], rng)[0]
        for row, tok in enumerate(nxt.tolist()):
            self.started[row] = self.started[row] or self.downs[tok]
        if all(self.started):
            self.lead = None
        return nxt

    def advance(self, nxt: np.ndarray) -> bool:
        """Take each row's drawn event (a finished row's becomes the end token, in place); True when
        every row is done."""
        for row, tok in enumerate(nxt.tolist()):
            if self.done[row]:
                nxt[row] = self.eos  # a finished row idles on the end token until all are done
                continue
            self.out[row].append(tok)
            if self.shift is not None:
                self.elapsed[row] += self.shift[tok]
            if self.keys is not None:
                self.keys.update(row, tok, self.elapsed[row])
            if self.conductor is not None:
                self.conductor.update(row, tok, self.elapsed[row])
            self.done[row] = tok == self.eos or self.elapsed[row] >= self.limit
            if self.steering is not None:
                self.steering.update(row, tok, self.elapsed[row])
        return all(self.done)

    def seconds(self) -> float | None:
        """Music seconds of the shortest row so far (None without a time grammar)."""
        return min(self.elapsed) / self.sps if self.timed else None

    def events(self) -> list[np.ndarray]:
        eos = self.eos
        return [np.array(row[:-1] if row and row[-1] == eos else row, dtype=np.int64) for row in self.out]


def _next_events(prefix: np.ndarray, start: int, t: int, rows: int, device) -> torch.Tensor:
    """The event after each of prefix[start:start + t], [rows, t]; the primer's last step has none
    yet (-1: StepCache.push_many leaves it pending for the first drawn event)."""
    nxt = np.full(t, -1, np.int64)
    got = np.asarray(prefix[start + 1:start + t + 1], np.int64)
    nxt[:len(got)] = got
    return torch.from_numpy(nxt).to(device).unsqueeze(0).expand(rows, -1)
