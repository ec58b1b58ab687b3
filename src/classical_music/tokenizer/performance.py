"""Performance RNN event vocabulary (Oore et al., 2018), so likelihoods compare with published ones.

    0 PAD, 1 BOS, 2 EOS                 specials: padding, start and end of a piece
    NOTE_ON  x128                       a key goes down (pitch 0..127)
    NOTE_OFF x128                       a key comes up (after the sustain pedal is folded in)
    TIME_SHIFT x100                     advance 10 ms ... 1 s (longer gaps use several)
    VELOCITY x32                        loudness of the following NOTE_ONs (bins of 4 MIDI steps)

Encoding is vectorised numpy: no Python loop per note, which is what makes preparation fast.
"""

from __future__ import annotations

import math

import numpy as np

from ..notes import Notes
from .base import Tokenizer, register


@register
class PerformanceTokenizer(Tokenizer):
    name = "performance"
    timed = True

    def __init__(self, steps_per_second: int = 100, max_shift_steps: int = 100, velocity_bins: int = 32):
        self.steps_per_second = int(steps_per_second)
        self.max_shift_steps = int(max_shift_steps)
        self.velocity_bins = int(velocity_bins)
        self.bin_size = math.ceil(127 / self.velocity_bins)
        self.note_on = 3
        self.note_off = self.note_on + 128
        self.time_shift = self.note_off + 128  # token for a shift of 1 step
        self.velocity = self.time_shift + self.max_shift_steps
        self._vocab = self.velocity + self.velocity_bins
        self.key_downs = slice(self.note_on, self.note_off)
        self.key_ups = slice(self.note_off, self.time_shift)
        self.time_shifts = slice(self.time_shift, self.velocity)
        self.velocities = slice(self.velocity, self._vocab)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    def params(self) -> dict:
        return {
            "steps_per_second": self.steps_per_second,
            "max_shift_steps": self.max_shift_steps,
            "velocity_bins": self.velocity_bins,
        }

    def resolution(self) -> dict:
        return {"time_step_seconds": 1 / self.steps_per_second, "velocity_bins": self.velocity_bins}

    def velocity_to_bin(self, velocity):
        return (np.clip(velocity, 1, 127) - 1) // self.bin_size

    def bin_to_velocity(self, b):
        # middle of the bin, so decode -> encode lands in the same bin
        return np.minimum(b * self.bin_size + 1 + self.bin_size // 2, 127)

    def encode_notes(self, notes: Notes) -> np.ndarray:
        if len(notes) == 0:
            return np.array([self.bos_id, self.eos_id], dtype=np.uint16)
        sps = self.steps_per_second
        on = np.round(notes.onset * sps).astype(np.int64)
        off = np.maximum(np.round(notes.offset * sps).astype(np.int64), on)
        pitch = notes.pitch.astype(np.int64)
        vbin = self.velocity_to_bin(notes.velocity.astype(np.int64))

        # One note per (pitch, onset step): a key cannot go down twice in 10 ms. Notes arrive
        # nearly in time order, so a stable sort (timsort: runs merge in ~linear time) on one
        # int64 key beats np.lexsort and the default quicksort. Sorting packed keys that carry
        # their own row index (np.sort) is ~3x faster than np.argsort; see bench/prepare.py.
        n = len(on)
        ib = max(1, n.bit_length())
        if int(on.max()) < 1 << (63 - 7 - ib):
            key = np.sort((on << 7 | pitch) << ib | np.arange(n), kind="stable")
            order = key & ((1 << ib) - 1)
            on, pitch = key >> (7 + ib), (key >> ib) & 127
        else:  # too wide to pack (needs years of music): plain argsort
            order = np.argsort(on << 7 | pitch, kind="stable")
            on, pitch = on[order], pitch[order]
        off, vbin = off[order], vbin[order]
        first = np.ones(len(on), bool)
        first[1:] = (on[1:] != on[:-1]) | (pitch[1:] != pitch[:-1])
        if not first.all():
            starts = np.flatnonzero(first)
            off = np.maximum.reduceat(off, starts)
            on, pitch, vbin = on[starts], pitch[starts], vbin[starts]
        # ... and a key must come up before it goes down again. Grouping by pitch with a stable
        # radix sort on uint8 keeps each key's notes in time order.
        by_key = np.argsort(pitch.astype(np.uint8), kind="stable")
        kp, kon, koff = pitch[by_key], on[by_key], off[by_key]
        same = kp[1:] == kp[:-1]
        koff[:-1][same] = np.minimum(koff[:-1][same], kon[1:][same])
        off[by_key] = koff

        # Events: at one step, releases of earlier notes, then key-downs, then releases of
        # zero-length notes (so a re-struck key and a staccato grace note both decode right).
        n = len(on)
        t = np.concatenate([on, off])
        kind = np.concatenate([np.ones(n, np.int64), np.where(off == on, 2, 0)])
        p = np.concatenate([pitch, pitch])
        v = np.concatenate([vbin, np.full(n, -1)])
        # (time, kind, pitch) is unique per event, so the velocity bin rides in the low bits
        vb = self.velocity_bins.bit_length()
        key = np.sort((t << 9 | kind << 7 | p) << vb | (v + 1), kind="stable")
        t, kind, p, v = key >> (9 + vb), (key >> (7 + vb)) & 3, (key >> vb) & 127, (key & ((1 << vb) - 1)) - 1

        dt = np.empty_like(t)
        dt[0] = t[0]
        np.subtract(t[1:], t[:-1], out=dt[1:])
        nshift = -(-dt // self.max_shift_steps)  # ceil
        is_on = kind == 1
        on_v = v[is_on]
        change = np.ones(len(on_v), bool)
        change[1:] = on_v[1:] != on_v[:-1]
        need_vel = np.zeros(len(t), bool)
        need_vel[is_on] = change

        # Each event owns [shifts..., velocity?, event]. Start from all-1-second shifts: the only
        # slots never overwritten below are the leading full shifts of gaps over a second, which
        # saves expanding every gap with np.repeat (most gaps need one shift or none).
        end = np.cumsum(nshift + need_vel + 1)
        out = np.full(int(end[-1]) + 2, self.time_shift + self.max_shift_steps - 1, dtype=np.uint16)
        out[0], out[-1] = self.bos_id, self.eos_id
        body = out[1:-1]
        body[end - 1] = p + np.where(is_on, self.note_on, self.note_off)
        body[end[need_vel] - 2] = self.velocity + v[need_vel]
        gap = nshift > 0
        body[(end - 2 - need_vel)[gap]] = self.time_shift - 1 + (dt - self.max_shift_steps * (nshift - 1))[gap]
        return out

    def decode(self, tokens) -> Notes:
        step = 0
        vel = self.bin_to_velocity(self.velocity_bins // 2)
        active: dict[int, tuple[int, int]] = {}
        ons, offs, pitches, vels = [], [], [], []

        def close(p, at):
            s, v = active.pop(p)
            ons.append(s)
            offs.append(at)
            pitches.append(p)
            vels.append(v)

        for tok in np.asarray(tokens, dtype=np.int64).tolist():
            if tok == self.eos_id:
                break
            if self.note_on <= tok < self.note_off:
                p = tok - self.note_on
                if p in active:
                    close(p, step)
                active[p] = (step, vel)
            elif self.note_off <= tok < self.time_shift:
                p = tok - self.note_off
                if p in active:
                    close(p, step)
            elif self.time_shift <= tok < self.velocity:
                step += tok - self.time_shift + 1
            elif self.velocity <= tok < self._vocab:
                vel = int(self.bin_to_velocity(tok - self.velocity))
        for p in list(active):
            close(p, step)
        sps = self.steps_per_second
        notes = Notes(
            np.array(ons, np.float64) / sps,
            np.array(offs, np.float64) / sps,
            np.array(pitches, np.int16),
            np.array(vels, np.int16),
        )
        return notes.sorted()

    def token_name(self, tok: int) -> str:
        if tok < 3:
            return self.SPECIALS[tok]
        if tok < self.note_off:
            return f"NOTE_ON_{tok - self.note_on}"
        if tok < self.time_shift:
            return f"NOTE_OFF_{tok - self.note_off}"
        if tok < self.velocity:
            return f"TIME_SHIFT_{(tok - self.time_shift + 1) * 1000 // self.steps_per_second}ms"
        if tok < self._vocab:
            return f"VELOCITY_{tok - self.velocity}"
        return f"UNKNOWN_{tok}"

    # --- the time grammar (Tokenizer's optional interface) -------------------------------------
    def shift_steps(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        is_shift = (tokens >= self.time_shift) & (tokens < self.velocity)
        return np.where(is_shift, tokens - self.time_shift + 1, 0)

    def key_events(self, tokens):
        tokens = np.asarray(tokens, dtype=np.int64)
        down = (tokens >= self.note_on) & (tokens < self.note_off)
        up = (tokens >= self.note_off) & (tokens < self.time_shift)
        return down, up, np.where(down, tokens - self.note_on, np.where(up, tokens - self.note_off, -1))

    def transpose(self, tokens, semitones: int) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        down, up, _ = self.key_events(tokens)
        return tokens + np.where(down | up, semitones, 0)

    def shift_velocities(self, tokens, bins: int) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        is_vel = (tokens >= self.velocity) & (tokens < self._vocab)
        return np.where(is_vel, np.clip(tokens + bins, self.velocity, self._vocab - 1), tokens)

    def stretch(self, tokens, factor: float, return_source: bool = False):
        """Every run of time shifts scaled by factor, re-emitted with the fewest tokens; a re-emitted
        run's source is the run's first token, so per-event data can follow the tokens."""
        steps = self.shift_steps(tokens)
        out: list[int] = []
        source: list[int] = []
        run, run_start = 0.0, 0
        for i, (t, s) in enumerate(zip(np.asarray(tokens).tolist(), steps.tolist())):
            if s:
                if not run:
                    run_start = i
                run += s
                continue
            if run:
                new = self.wait_tokens(int(round(run * factor)))
                out.extend(new)
                source.extend([run_start] * len(new))
                run = 0.0
            out.append(t)
            source.append(i)
        if run:
            new = self.wait_tokens(int(round(run * factor)))
            out.extend(new)
            source.extend([run_start] * len(new))
        if return_source:
            return np.array(out, np.int64), np.array(source, np.int64)
        return np.array(out, np.int64)

    def wait_tokens(self, steps: int) -> list[int]:
        full, rest = divmod(max(steps, 0), self.max_shift_steps)
        return [self.time_shift + self.max_shift_steps - 1] * full + ([self.time_shift + rest - 1] if rest else [])

    def velocity_token(self, velocity: int) -> int:
        return self.velocity + int(self.velocity_to_bin(velocity))
