"""Composing: sample events from the LSTM, one step per event, carrying its state.

    classical-music generate --output song.mid --seconds 30 --temperature 0.9 --mp3 --plot
    python generate.py --checkpoint checkpoints/best --output generated_song.mid

A primer (a MIDI file's opening, or typed notes such as "C4 E4 G4, F4 A4 C5") is run through the
model once; then every new event costs one LSTM step for the whole batch of variations, never a
re-run over a window. Same --seed and arguments -> the same notes.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from . import conditions
from . import threads as cpu_threads
from .errors import UserError
from .files import atomic_path, staged_paths
from .notes import MidiReadError, Notes, load_score, notes_to_score, score_to_notes

DEFAULT_MODEL = "default"
MAX_NOTE_SECONDS = 10.0  # longest key-down generation allows; real playing: 99.9 % under ~12 s
END_AFTER = 0.8  # share of --seconds before the model may end a piece itself (KeyTracker)
# A primer longer than this is refused (take its opening with --primer_seconds): 5-10 minutes of
# piano, which the 3 x 512 model reads in about a minute on one busy CPU core (5,000 events: 5.9 s).
# It runs through the model PRIME_CHUNK events at a time, so memory is that of one chunk (a 15.9 MB
# primer in one pass allocated 10.8 GB).
MAX_PRIMER_EVENTS = 50_000
PRIME_CHUNK = 2048
PRECISIONS = ("auto", "float32", "int8")
# Steering gains (sample's steer_*): a key's tonic then gains ~e^1.5 over its tritone, and a piece
# one e-fold behind its density gets ~e^1 more key-downs.
STEER_KEY_GAIN = 0.75
STEER_DENSITY_GAIN = 6.0
STEER_AHEAD = 1.1  # more key-downs than this share of the schedule (+2) waits for time to pass
# One piece is at most an hour of music, or as many events as sample() budgets for an hour:
# without a cap, --seconds 1e9 decodes for ever while its event lists grow.
MAX_SECONDS = 3600.0
MAX_EVENTS = 400 * 3600


@dataclass
class GenerateConfig:
    output: Path = Path("generated_song.mid")
    checkpoint: Path | None = None
    seconds: float | None = 30.0
    events: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    num_samples: int = 1
    primer: Path | None = None
    primer_seconds: float | None = None
    primer_notes: str | None = None
    primer_chord_seconds: float = 0.5
    primer_in_output: bool = True
    max_note_seconds: float = MAX_NOTE_SECONDS
    min_seconds: float | None = None  # the model may end the piece after this; None: see end_allowed_after
    wav: bool = False
    mp3: bool = False
    plot: bool = False
    soundfont: Path | None = None
    device: str = "cpu"
    precision: str = "auto"  # of the decoding matmuls: auto = int8 on the CPU, else float32
    # style (classical_music.conditions); None = any. density in notes per second, key like "D minor"
    composer: str | None = None
    period: str | None = None
    kind: str | None = None
    density: float | None = None
    key: str | None = None
    guidance: float = 1.0  # classifier-free guidance: 1 = off, > 1 follows the conditions harder
    steer: float = 1.0  # hold --density and --key while sampling too (0 = the model's conditions alone)

    def validate(self) -> None:
        if not 0 < self.temperature < math.inf:
            raise UserError(f"--temperature must be a positive number, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"--top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise UserError(f"--min_p must be in [0, 1), got {self.min_p}")
        if self.num_samples < 1:
            raise UserError(f"--num_samples must be >= 1, got {self.num_samples}")
        if self.seconds is not None and not 0 < self.seconds < math.inf:
            raise UserError(f"--seconds must be a positive number, got {self.seconds}")
        if self.seconds is not None and self.seconds > MAX_SECONDS:
            raise UserError(f"--seconds must be at most {MAX_SECONDS:g} (one hour), got {self.seconds:g}")
        if not 0 <= self.max_note_seconds < math.inf:
            raise UserError(f"--max_note_seconds must be >= 0 (0 = no limit), got {self.max_note_seconds}")
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
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "int8" and not use_int8(self.device):
            raise UserError(f"--precision int8 runs on the CPU only, with PyTorch's int8 kernels: "
                            f"not on {self.device}" if torch.device(self.device).type != "cpu"
                            else "--precision int8: this PyTorch build has no int8 CPU kernels")
        if self.output.suffix.lower() not in (".mid", ".midi"):
            raise UserError(f"--output must end in .mid or .midi, got {self.output.name}")
        if not 0 <= self.steer <= 10:
            raise UserError(f"--steer must be between 0 and 10 (0 = off), got {self.steer}")
        if not 0 <= self.guidance <= 10:
            raise UserError(f"--guidance must be between 0 and 10 (1 = off), got {self.guidance}")
        if self.key is not None:
            conditions.parse_key(self.key)  # a malformed key fails before the model loads

    def style(self) -> dict:
        return {n: getattr(self, n) for n in conditions.NAMES}


def condition_codes(model, style: dict) -> tuple[torch.Tensor | None, dict[str, str]]:
    """What was asked for, checked against what the checkpoint knows -> [n] indices and labels."""
    vocab = model.config.conditions
    codes = conditions.encode_request(vocab, **style)
    if not vocab:
        return None, {}
    index = {n: codes.get(n, 0) for n in vocab}
    return torch.tensor(list(index.values()), dtype=torch.long), conditions.describe(vocab, index)


def steering(style: dict | None, strength: float = 1.0) -> dict:
    """sample()'s steer_* arguments for a style's density and key (none asked: no steering)."""
    style = style or {}
    key = style.get("key")
    return {"steer": strength, "steer_density": style.get("density"),
            "steer_key": None if key in (None, "") else conditions.parse_key(key)}


def list_conditions(model) -> str:
    """What --list_conditions prints: each condition's values, composers with their training hours."""
    vocab = model.config.conditions
    if not vocab:
        return "this checkpoint has no style conditions (it composes unconditioned)"
    cfg = getattr(model, "checkpoint_config", {}) or {}
    hours = cfg.get("condition_hours", {})
    lines = []
    for name, labels in vocab.items():
        known = [v for v in labels if v != conditions.ANY]
        if name == "composer":
            h = hours.get("composer", {})
            shown = [f"{v} ({conditions.composer_display(v)}, {h[v]:.1f} h)" if v in h else v for v in known]
            lines.append(f"composer (at least {cfg.get('composer_min_hours', conditions.COMPOSER_MIN_HOURS):g} h of "
                         f"training music; others are `other`):\n  " + "\n  ".join(shown))
        elif name in hours:
            lines.append(f"{name}: " + ", ".join(f"{v} ({hours[name][v]:.1f} h)" if v in hours[name] else v
                                                   for v in known))
        elif name == "density":
            lines.append("density: notes per second, e.g. 2, 4, 8, 16 (bins: " + ", ".join(known) + ")")
        else:
            lines.append("key: any of the 24 major and minor keys, e.g. C, Am, F# minor, Eb major")
    return "\n".join(lines)


# -- the model --------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """A one-line error for a device this machine does not have (instead of a loader's riddle)."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine (or this PyTorch build) has no CUDA GPU")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 ...")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: Apple's MPS is not available here")


def default_checkpoint() -> Path:
    return Path(str(resources.files("classical_music") / "pretrained" / DEFAULT_MODEL))


def load_model(checkpoint=None, device="cpu"):
    """A checkpoint folder (or a file in one); None means the model shipped in the package."""
    from .model import ComposerLSTM

    if checkpoint is None:
        checkpoint = default_checkpoint()
        if not (checkpoint / "model.safetensors").is_file():
            raise UserError("this package has no built-in model; pass --checkpoint DIR (see `classical-music train`)")
    model = ComposerLSTM.from_pretrained(checkpoint, map_location=device)
    if getattr(model, "tokenizer", None) is None:
        raise UserError(f"{checkpoint} has no tokenizer.json; it cannot be used to compose")
    return model


# -- primers ----------------------------------------------------------------------------------

_NOTE = re.compile(r"^([A-Ga-g])([#b♯♭]*)(-?\d+)$")
_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def parse_note_name(name: str) -> int:
    """Scientific pitch notation: C4 = 60, A4 = 69, Bb3, F#5."""
    m = _NOTE.match(name.strip())
    if not m:
        raise UserError(f"cannot read note {name!r}: write notes like C4, F#3 or Bb5")
    letter, acc, octave = m.groups()
    pitch = _STEPS[letter.upper()] + acc.count("#") + acc.count("♯") - acc.count("b") - acc.count("♭")
    pitch += (int(octave) + 1) * 12
    if not 0 <= pitch <= 127:
        raise UserError(f"note {name!r} is outside the MIDI range")
    return pitch


def parse_primer_notes(text: str, chord_seconds: float = 0.5, velocity: int = 72) -> Notes:
    """"C4 E4 G4, F4 A4 C5": chords separated by commas, each held for chord_seconds."""
    chords = [c.split() for c in text.split(",")]
    if not any(chords):
        raise UserError("--primer_notes is empty: write chords like \"C4 E4 G4, F4 A4 C5\"")
    on, off, pitch = [], [], []
    for i, chord in enumerate(chords):
        if not chord:
            raise UserError(f"--primer_notes has an empty chord at position {i + 1}")
        for name in chord:
            pitch.append(parse_note_name(name))
            on.append(i * chord_seconds)
            off.append((i + 1) * chord_seconds)
    n = len(pitch)
    return Notes(np.array(on), np.array(off), np.array(pitch, np.int16), np.full(n, velocity, np.int16)).sorted()


def primer_from_midi(path: Path, seconds: float | None) -> Notes:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"primer {path} is a folder: give a .mid file")
    if not path.exists():
        raise UserError(f"primer {path} not found")
    try:
        notes = score_to_notes(load_score(path))
    except MidiReadError as e:
        raise UserError(f"cannot use primer {path}: {e}") from None
    if seconds is not None:
        keep = notes.onset < seconds
        notes = Notes(notes.onset[keep], np.minimum(notes.offset[keep], seconds), notes.pitch[keep], notes.velocity[keep])
    if len(notes) == 0:
        raise UserError(f"primer {path} has no notes" + (f" in its first {seconds:g} s" if seconds else ""))
    return notes


def primer_tokens(tokenizer, notes: Notes | None, max_events: int = MAX_PRIMER_EVENTS) -> np.ndarray:
    if notes is None:
        return np.array([tokenizer.bos_id], np.int64)
    tokens = tokenizer.encode_notes(notes).astype(np.int64)[:-1]  # no EOS: the piece goes on
    if len(tokens) - 1 > max_events:
        raise UserError(f"the primer is {len(tokens) - 1:,} events ({notes.seconds:.0f} s of music), over the "
                        f"limit of {max_events:,}: take its opening with --primer_seconds")
    return tokens


@torch.inference_mode()
def prime(model, prefix: np.ndarray, num_samples: int = 1, device="cpu", chunk: int = PRIME_CHUNK, cond=None):
    """Run prefix through the model chunk by chunk: (logits after its last event [num_samples, vocab],
    LSTM state). The same as one pass (the state is carried), with memory of one chunk.
    cond, if given, goes to the model as is ([B, n]) or sliced like the prefix ([B, T, n])."""
    x = torch.as_tensor(prefix, dtype=torch.long, device=device).unsqueeze(0).expand(num_samples, -1)
    state, kw = None, {}
    for s in range(0, x.shape[1], chunk):
        if cond is not None:
            kw = {"cond": cond[:, s:s + chunk] if cond.dim() == 3 else cond}
        logits, state = model(x[:, s:s + chunk], state, **kw)
    return logits[:, -1], state


# -- sampling ---------------------------------------------------------------------------------


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
      an undertrained model leaves a few notes sounding to the end of the piece.

    * no key struck twice at one instant (the first note would last 0 s: ~1 % of an early
      model's notes were such blips);
    * no end token before the continuation's first key-down: a primer that ends a piece
      (silence, keys up) otherwise often draws it at once, and the "continuation" is nothing;
    * and none before step `end_from`: the shipped model, at temperature 0.8, ended 14 of 96
      pieces asked for 30 s before 25 s (9 with under 30 notes), so by default the piece may end
      itself only in the last fifth of --seconds (`end_allowed_after`, --min_seconds).

    All but the second are `bias`, an additive 0 / -inf mask kept up to date token by token; the
    second is a dict per row of key -> step it must come up by. Updates are plain Python on one
    row at a time: a few hundred nanoseconds, where array operations cost microseconds.
    """

    def __init__(self, tokenizer, prefix: np.ndarray, bias: np.ndarray, max_hold_steps: int = 0, end_from: int = 0):
        self.on, self.off = tokenizer.note_on, tokenizer.note_off
        self.bias = bias  # [batch, vocab], shared with the sampler
        self.bias[:, self.off:self.off + 128] = -np.inf
        self.due = [{} for _ in range(len(bias))]  # per row: key -> step by which it must come up
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
        if now != self.now[row]:  # time moved on: those keys may be struck again
            for key in self.struck[row]:
                self.bias[row, self.on + key] = 0.0
            self.struck[row].clear()
            self.now[row] = now
            if now >= self.end_from and self.started[row]:
                self.bias[row, self.eos] = 0.0
        key = token - self.on
        if 0 <= key < 128:
            self.due[row][key] = due = now + self.max_hold
            self.next_due[row] = min(self.next_due[row], due)
            self.bias[row, self.off + key] = 0.0
            self.bias[row, token] = -np.inf
            self.struck[row].append(key)
            self.started[row] = True
            if now >= self.end_from:
                self.bias[row, self.eos] = 0.0
        elif 0 <= token - self.off < 128:
            self.due[row].pop(token - self.off, None)
            self.bias[row, token] = -np.inf

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
    from .model import int8_available

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


@torch.inference_mode()
def sample(model, tokenizer, prefix: np.ndarray, *, num_samples=1, seconds=None, events=None, temperature=1.0,
           top_k=0, top_p=1.0, min_p=0.0, seed=None, device="cpu", progress=None,
           max_note_seconds=MAX_NOTE_SECONDS, min_seconds=None, int8: bool | None = None, cond=None,
           guidance: float = 1.0, steer_density: float | None = None, steer_key: int | None = None,
           steer: float = 1.0) -> list[np.ndarray]:
    """Continue `prefix` in num_samples variations; returns each one's new tokens (no prefix).

    With Performance events, keys are released only if down, and none is held over
    max_note_seconds (0 = no limit), and the end token waits for a first key-down and
    end_allowed_after(seconds, events, min_seconds) of music; see KeyTracker. int8: decode with
    int8 weights (default: on the CPU; see model.StepDecoder).

    cond: style condition indices, [n] or [num_samples, n] (condition_codes); None = all "any".
    guidance: classifier-free guidance (Ho & Salimans 2022): each step also runs unconditioned
    and draws from logits u + guidance * (c - u); 1 = off, at no cost.
    steer_density (notes/s), steer_key (conditions.KEYS index): hold them while sampling, with
    strength `steer` (0 = the model alone): key-downs get the key's Krumhansl profile as a logit
    bonus, and a bonus or malus that follows the gap between the onsets so far and the density
    asked for (an integral controller, so a piece's average lands on the request).

    The model runs on `device`; choosing each next event runs on the CPU in NumPy and plain
    Python, where a step's bookkeeping costs ~20 us instead of ~100 us as PyTorch calls.
    """
    rng = np.random.default_rng(None if seed is None else int(seed) % 2**64)  # any int, negatives too
    model.eval()
    n_cond = len(model.config.conditions)
    if cond is not None:
        cond = torch.as_tensor(cond, dtype=torch.long, device=device).reshape(-1, n_cond).expand(num_samples, -1)
    guided = cond is not None and guidance != 1.0
    rows = 2 * num_samples if guided else num_samples
    if guided:  # the second half of the batch composes the same piece unconditioned
        cond = torch.cat([cond, torch.zeros_like(cond)])
    logits, state = prime(model, prefix, rows, device, cond=cond)
    vocab = logits.shape[-1]
    decoder = model.decoder(int8=use_int8(device) if int8 is None else int8)
    terms = decoder.conditioning(cond)

    def guide(logits):  # conditioned rows first, their unconditioned twins after
        lc, lu = torch.log_softmax(logits.float(), -1).chunk(2)
        return lu + guidance * (lc - lu)

    def step(idx, state):
        if not guided:
            return decoder.step(idx, state, terms)
        logits, state = decoder.step(torch.cat([idx, idx]), state, terms)
        return guide(logits), state

    if guided:
        logits = guide(logits)
    bias = np.zeros((num_samples, vocab), np.float32)  # added to the logits: -inf = never
    bias[:, [tokenizer.pad_id, tokenizer.bos_id]] = -np.inf
    steps_per_second = getattr(tokenizer, "steps_per_second", None)
    shift = keys = None
    if steps_per_second and hasattr(tokenizer, "shift_steps"):
        shift = tokenizer.shift_steps(np.arange(vocab)).tolist()
        if hasattr(tokenizer, "note_on") and hasattr(tokenizer, "note_off"):
            hold = round((max_note_seconds or 0) * steps_per_second)
            keys = KeyTracker(tokenizer, prefix, bias, max_hold_steps=hold,
                              end_from=math.ceil(end_allowed_after(seconds, events, min_seconds) * steps_per_second))
    # Without a time signal in the tokens (REMI), bound the length by a generous event budget.
    max_events = events or int((seconds or 30) * (1000 if shift is None else 400))
    limit = seconds * steps_per_second if (seconds and shift is not None and not events) else math.inf
    plain = not (top_k or top_p < 1 or min_p > 0)
    eos = tokenizer.eos_id
    steering = None
    if steer and (steer_density or steer_key is not None) and keys is not None:
        steering = np.zeros((num_samples, vocab), np.float32)
        on = slice(tokenizer.note_on, tokenizer.note_on + 128)
        key_bonus = np.zeros(128, np.float32)
        if steer_key is not None:
            z = conditions.PROFILES[steer_key] * math.sqrt(12)  # the key's profile as z-scores
            key_bonus = (steer * STEER_KEY_GAIN * z[np.arange(128) % 12]).astype(np.float32)
        steering[:, on] = key_bonus
        # A velocity token all but forces a key-down and a time shift postpones one: the density
        # term pushes both ends, or a model deep in a chord would play on through any malus.
        vel = slice(tokenizer.velocity, vocab)
        wait = slice(tokenizer.time_shift, tokenizer.time_shift + tokenizer.max_shift_steps)
        onsets = [0] * num_samples
    out: list[list[int]] = [[] for _ in range(num_samples)]
    elapsed = [0] * num_samples
    done = [False] * num_samples
    with _one_thread_on_cpu(device):
        for n in range(max_events):
            scores = logits.float().cpu().numpy() + bias
            if steering is not None:
                scores += steering
            if keys is not None:
                keys.force_overdue(scores, elapsed)
            if plain:
                if temperature != 1:
                    scores *= 1.0 / temperature
            else:
                scores = filter_logits(torch.from_numpy(scores), temperature, top_k, top_p, min_p).numpy()
            nxt = _draw(scores, rng)
            for row, tok in enumerate(nxt.tolist()):
                if done[row]:
                    nxt[row] = eos  # a finished row idles on the end token until all are done
                    continue
                out[row].append(tok)
                if shift is not None:
                    elapsed[row] += shift[tok]
                if keys is not None:
                    keys.update(row, tok, elapsed[row])
                done[row] = tok == eos or elapsed[row] >= limit
                if steering is not None and steer_density:
                    onsets[row] += on.start <= tok < on.stop
                    want = steer_density * max(elapsed[row] / steps_per_second, 1.0)
                    gap = min(max(math.log((want + 1) / (onsets[row] + 1)), -4.0), 4.0)
                    push = steer * STEER_DENSITY_GAIN * gap
                    # Well ahead of the schedule, no new key-down until time catches up: a soft
                    # malus alone let a model in full flow overshoot 2 notes/s by half again.
                    if onsets[row] > STEER_AHEAD * want + 2:
                        push = -np.inf
                    steering[row, on] = key_bonus + push
                    steering[row, vel] = push
                    steering[row, wait] = 0.0 if push == -np.inf else -push
            if progress:
                progress(n + 1, max_events, min(elapsed) / steps_per_second if shift is not None else None)
            if all(done):
                break
            logits, state = step(torch.from_numpy(nxt).to(device), state)
    return [np.array(row[:-1] if row and row[-1] == eos else row, dtype=np.int64) for row in out]


@contextmanager
def _one_thread_on_cpu(device):
    """A decoding step is a few dozen small operations: a second OpenMP thread gains ~5 % on an
    idle machine and halves the speed when another process holds the other core (measured on 2
    cores), so the step loop runs on one."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- the command ------------------------------------------------------------------------------


def output_paths(output: Path, n: int) -> list[Path]:
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(1, n + 1)]


def _writable_folder(folder: Path) -> None:
    """Fail now, not after composing, where the output folder cannot be made or written; make
    nothing yet (a failed run leaves no empty folder behind)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {existing} is not writable")


def write_midi(score, path: Path, shown: Path | None = None) -> None:
    """score -> path; errors name `shown` (the file the user asked for, not a temporary name)."""
    try:
        score.dump_midi(str(path))
    except (OSError, RuntimeError) as e:  # symusic reports a failed open as RuntimeError
        raise UserError(f"cannot write {shown or path}: {e}") from None


def write_midi_atomic(score, path: Path) -> None:
    with atomic_path(path) as tmp:
        write_midi(score, tmp, path)


def compose(cfg: GenerateConfig, progress: bool = False) -> list[dict]:
    """Everything `generate` does: returns one dict per variation with its files and numbers."""
    cfg.validate()
    primer = None
    if cfg.primer:
        primer = primer_from_midi(cfg.primer, cfg.primer_seconds)
    elif cfg.primer_notes is not None:
        primer = parse_primer_notes(cfg.primer_notes, cfg.primer_chord_seconds)
    folder = cfg.output.parent if str(cfg.output.parent) else Path(".")
    _writable_folder(folder)
    paths = output_paths(cfg.output, cfg.num_samples)
    for path in paths:
        if path.is_dir():
            raise UserError(f"--output {path} is a folder: name a .mid file")
    if cfg.wav or cfg.mp3:
        from .audio import find_soundfont

        find_soundfont(cfg.soundfont)  # a bad --soundfont stops us before composing, not after
    model = load_model(cfg.checkpoint, cfg.device)
    cond, style = condition_codes(model, cfg.style())
    tok = model.tokenizer
    prefix = primer_tokens(tok, primer)
    primer_end = 0.0 if primer is None else float(primer.offset.max())
    seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**31)

    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.events or (round(cfg.seconds) if cfg.seconds else None), unit="s" if not cfg.events else "event",
                   desc="composing", leave=False)

    def report(n, total, music_s):
        if bar is not None:
            done = n if cfg.events or music_s is None else min(round(music_s), bar.total or 0)
            if done != bar.n:  # redraw only on change: a redraw costs more than an LSTM step
                bar.n = done
                bar.refresh()

    t0 = time.perf_counter()
    rows = sample(model, tok, prefix, num_samples=cfg.num_samples, seconds=cfg.seconds, events=cfg.events,
                  temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, min_p=cfg.min_p, seed=seed,
                  device=cfg.device, progress=report, max_note_seconds=cfg.max_note_seconds,
                  min_seconds=cfg.min_seconds, cond=cond, guidance=cfg.guidance, **steering(cfg.style(), cfg.steer),
                  int8=None if cfg.precision == "auto" else cfg.precision == "int8")
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    pieces = []
    for path, new in zip(paths, rows):
        whole = tok.decode(np.concatenate([prefix, new]))
        if not cfg.primer_in_output and primer is not None:
            keep = whole.onset >= primer_end - 1e-9
            whole = Notes(whole.onset[keep] - primer_end, whole.offset[keep] - primer_end, whole.pitch[keep],
                          whole.velocity[keep])
        if cfg.seconds and not cfg.events:
            limit = cfg.seconds + (primer_end if cfg.primer_in_output else 0.0)
            keep = whole.onset < limit
            whole = Notes(whole.onset[keep], np.minimum(whole.offset[keep], limit), whole.pitch[keep], whole.velocity[keep])
        if len(whole) == 0:
            raise UserError(f"the model composed no notes for {path.name} in {len(new)} events: "
                            "ask for more --events or --seconds, or try another --seed")
        pieces.append((path, whole, new))

    # Every variation's MIDI, audio and picture land together or not at all.
    made = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        results = _write_pieces(cfg, pieces, seed, wall)
        for r in results:
            r["conditions"] = style
        return results
    except BaseException as e:
        for f in made:  # the folders this run made, now empty again
            try:
                f.rmdir()
            except OSError:
                break
        if isinstance(e, OSError):
            raise UserError(f"cannot write to {folder}: {e.strerror or e}") from None
        raise


def _write_pieces(cfg: GenerateConfig, pieces, seed: int, wall: float) -> list[dict]:
    results = []
    with staged_paths() as stage:
        for path, whole, new in pieces:
            midi = stage(path)
            write_midi(notes_to_score(whole), midi, path)
            files = {"midi": path}
            audio = [path.with_suffix(ext) for ext, wanted in ((".wav", cfg.wav), (".mp3", cfg.mp3)) if wanted]
            if audio:
                from .audio import render

                render(midi, [stage(a) for a in audio], soundfont=cfg.soundfont)  # one synthesis, every format
                files.update({a.suffix[1:]: a for a in audio})
            if cfg.plot:
                from .plot import piano_roll

                piano_roll(midi, stage(path.with_suffix(".png")), title=path.stem)
                files["png"] = path.with_suffix(".png")
            results.append({"files": files, "notes": len(whole), "events": len(new), "seconds": whole.seconds,
                            "seed": seed, "wall_seconds": wall})
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder or a file inside one (default: the model shipped in the package)")
    p.add_argument("--output", type=Path, default=Path("generated_song.mid"),
                   help="MIDI file to write (several variations: NAME_1.mid, NAME_2.mid, ...)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=30.0,
                        help=f"seconds of music to compose (default 30, at most {MAX_SECONDS:g})")
    length.add_argument("--events", type=int, default=None,
                        help=f"number of events to compose instead of --seconds (at most {MAX_EVENTS:,})")
    p.add_argument("--temperature", type=float, default=1.0, help="> 1 wilder, < 1 safer (default 1.0)")
    p.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest events (0 = off)")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling: smallest set with this mass (1 = off)")
    p.add_argument("--min_p", type=float, default=0.0, help="drop events under min_p x the likeliest one (0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed: same seed and arguments, same notes")
    p.add_argument("--num_samples", type=int, default=1, help="variations composed in one batched pass")
    p.add_argument("--primer", type=Path, default=None, help="a MIDI file whose opening the piece continues "
                   f"(at most {MAX_PRIMER_EVENTS:,} events, 5-10 minutes of piano; see --primer_seconds)")
    p.add_argument("--primer_seconds", type=float, default=None, help="use the primer's first S seconds")
    p.add_argument("--primer_notes", default=None, help='typed opening chords, e.g. "C4 E4 G4, F4 A4 C5"')
    p.add_argument("--primer_chord_seconds", type=float, default=0.5, help="length of each typed chord")
    p.add_argument("--no_primer_in_output", action="store_true", help="write only the continuation")
    p.add_argument("--max_note_seconds", type=float, default=MAX_NOTE_SECONDS,
                   help=f"release any key held this long (default {MAX_NOTE_SECONDS:g}; 0 = no limit)")
    p.add_argument("--min_seconds", type=float, default=None,
                   help="the model may end the piece itself only after this many seconds "
                        "(default: 80%% of --seconds; 0 = whenever it likes)")
    p.add_argument("--wav", action="store_true", help="also write NAME.wav")
    p.add_argument("--mp3", action="store_true", help="also write NAME.mp3")
    p.add_argument("--plot", action="store_true", help="also write a piano-roll NAME.png")
    p.add_argument("--soundfont", type=Path, default=None, help="SF2 SoundFont for --wav/--mp3")
    style = p.add_argument_group("style (see --list_conditions; each optional, default any)")
    style.add_argument("--composer", default=None, help="compose like this composer, e.g. chopin")
    style.add_argument("--period", default=None, help="baroque, classical, romantic, impressionist or modern")
    style.add_argument("--kind", default=None, help="performance (a pianist's timing) or sequenced (score-like)")
    style.add_argument("--density", type=float, default=None, help="notes per second, e.g. 8")
    style.add_argument("--key", default=None, help='e.g. C, Am, "F# minor", "Eb major"')
    style.add_argument("--guidance", type=float, default=1.0,
                       help="classifier-free guidance: > 1 follows the style harder, at twice the cost (1 = off)")
    style.add_argument("--steer", type=float, default=1.0,
                       help="also hold --density and --key while sampling, at this strength (0 = the model alone)")
    style.add_argument("--list_conditions", action="store_true",
                       help="print the styles the checkpoint knows (composers with their training hours) and exit")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    cpu_threads.add_argument(p)  # decoding steps still run on one: see _one_thread_on_cpu
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="decoding matmuls: int8 is ~3x faster on the CPU at batch 1 and ~6.5x at batch 8, "
                        "scoring within 0.001 nats/event of float32, though a seed's "
                        "piece differs between them (auto: int8 on the CPU, float32 elsewhere)")
    p.set_defaults(func=_run)


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="compose a piece (MIDI, and optionally WAV, MP3 and a piano roll)",
                       description=__doc__.split("\n\n")[0])
    add_arguments(p)


def _run(args) -> int:
    cpu_threads.apply(args.threads)
    if args.list_conditions:
        check_device(args.device)
        print(list_conditions(load_model(args.checkpoint, args.device)))
        return 0
    cfg = GenerateConfig(
        output=args.output, checkpoint=args.checkpoint, seconds=None if args.events else args.seconds,
        events=args.events, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        seed=args.seed, num_samples=args.num_samples, primer=args.primer, primer_seconds=args.primer_seconds,
        primer_notes=args.primer_notes, primer_chord_seconds=args.primer_chord_seconds,
        primer_in_output=not args.no_primer_in_output, wav=args.wav, mp3=args.mp3, plot=args.plot,
        soundfont=args.soundfont, device=args.device, max_note_seconds=args.max_note_seconds,
        min_seconds=args.min_seconds, precision=args.precision, composer=args.composer, period=args.period,
        kind=args.kind, density=args.density, key=args.key, guidance=args.guidance, steer=args.steer,
    )
    for r in compose(cfg, progress=True):
        names = ", ".join(str(p) for p in r["files"].values())
        style = "".join(f", {k} {v}" for k, v in r["conditions"].items())
        print(f"wrote {names}: {r['seconds']:.1f} s, {r['notes']} notes (seed {r['seed']}{style}, "
              f"{r['events']} events in {r['wall_seconds']:.1f} s)")
    return 0


def main(argv=None) -> int:
    from .cli import run

    from .cli import Parser

    p = Parser(prog="generate.py", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args.func, args)
