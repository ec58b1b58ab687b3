"""Composing: sample events from the LSTM, one step per event, carrying its state.

    classical-music generate --output song.mid --seconds 30 --temperature 0.9 --mp3 --plot
    python generate.py --checkpoint checkpoints/best --output generated_song.mid

A primer (a MIDI file's opening, or typed notes such as "C4 E4 G4, F4 A4 C5") is run through the
model once; then every new event costs one LSTM step for the whole batch of variations, never a
re-run over a window. Same --seed and arguments -> the same notes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import atomic_path
from .notes import MidiReadError, Notes, load_score, notes_to_score, score_to_notes

DEFAULT_MODEL = "default"
MAX_NOTE_SECONDS = 10.0  # longest key-down generation allows; real playing: 99.9 % under ~12 s


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
    wav: bool = False
    mp3: bool = False
    plot: bool = False
    soundfont: Path | None = None
    device: str = "cpu"

    def validate(self) -> None:
        if not self.temperature > 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"--top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise UserError(f"--min_p must be in [0, 1), got {self.min_p}")
        if self.num_samples < 1:
            raise UserError(f"--num_samples must be >= 1, got {self.num_samples}")
        if self.seconds is not None and not self.seconds > 0:
            raise UserError(f"--seconds must be > 0, got {self.seconds}")
        if self.max_note_seconds < 0:
            raise UserError(f"--max_note_seconds must be >= 0 (0 = no limit), got {self.max_note_seconds}")
        if self.events is not None and self.events < 1:
            raise UserError(f"--events must be >= 1, got {self.events}")
        if self.primer and self.primer_notes:
            raise UserError("give either --primer or --primer_notes, not both")
        if self.primer_seconds is not None and not self.primer_seconds > 0:
            raise UserError(f"--primer_seconds must be > 0, got {self.primer_seconds}")
        if self.output.suffix.lower() not in (".mid", ".midi"):
            raise UserError(f"--output must end in .mid or .midi, got {self.output.name}")


# -- the model --------------------------------------------------------------------------------


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
    if not Path(path).is_file():
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


def primer_tokens(tokenizer, notes: Notes | None) -> np.ndarray:
    if notes is None:
        return np.array([tokenizer.bos_id], np.int64)
    tokens = tokenizer.encode_notes(notes).astype(np.int64)
    return tokens[:-1]  # no EOS: the piece goes on


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
    """Which keys are down and since when, for the grammar of Performance events.

    Two rules, applied to the logits before sampling (the model's likelihood, as `evaluate`
    measures it, is untouched):

    * never release a key that is not down. To the decoder that is a no-op, but a small model
      spends over half its NOTE_OFFs that way (measured: 54 % on an early default model) and leaves
      the keys it did strike ringing;
    * a key held for `max_hold_steps` must come up next. Real playing almost never holds a key,
      pedal included, beyond ~12 s (99.9th percentile of the shared corpus); without this rule
      an undertrained model leaves a few notes sounding to the end of the piece.
    """

    def __init__(self, tokenizer, prefix: np.ndarray, batch: int, vocab: int, device, max_hold_steps: int = 0):
        on, off = tokenizer.note_on, tokenizer.note_off
        self.offs = slice(off, off + 128)
        key = torch.full((vocab,), 128, dtype=torch.long)  # 128: a spare column for other events
        key[on:on + 128] = key[off:off + 128] = torch.arange(128)
        struck = torch.zeros(vocab, dtype=torch.bool)
        struck[on:on + 128] = True
        self.key, self.struck = key.to(device), struck.to(device)
        self.down = torch.zeros(batch, 129, dtype=torch.bool, device=device)
        self.since = torch.zeros(batch, 129, dtype=torch.long, device=device)  # time step of key-down
        self.rows = torch.arange(batch, device=device)
        self.max_hold = int(max_hold_steps)
        # The primer's keys still down, timed so that the continuation starts at step 0.
        prefix = np.asarray(prefix, dtype=np.int64)
        times = np.cumsum(tokenizer.shift_steps(prefix))
        for tok, t in zip(prefix.tolist(), (times - (times[-1] if len(times) else 0)).tolist()):
            self.update(torch.full((batch,), tok, dtype=torch.long, device=device),
                        torch.full((batch,), t, dtype=torch.long, device=device))

    def mask(self, logits: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        down = self.down[:, :128]
        logits[:, self.offs] = logits[:, self.offs].masked_fill(~down, float("-inf"))
        if self.max_hold:
            overdue = down & (now[:, None] - self.since[:, :128] >= self.max_hold)
            late = overdue.any(1)
            if bool(late.any()):  # those rows may only release an overdue key
                forced = torch.full_like(logits, float("-inf"))
                forced[:, self.offs] = torch.zeros_like(logits[:, self.offs]).masked_fill(~overdue, float("-inf"))
                logits = torch.where(late[:, None], forced, logits)
        return logits

    def update(self, tokens: torch.Tensor, now: torch.Tensor) -> None:
        k = self.key[tokens]
        self.down[self.rows, k] = self.struck[tokens]
        self.since[self.rows, k] = now


@torch.inference_mode()
def sample(model, tokenizer, prefix: np.ndarray, *, num_samples=1, seconds=None, events=None, temperature=1.0,
           top_k=0, top_p=1.0, min_p=0.0, seed=None, device="cpu", progress=None,
           max_note_seconds=MAX_NOTE_SECONDS) -> list[np.ndarray]:
    """Continue `prefix` in num_samples variations; returns each one's new tokens (no prefix).

    With Performance events, keys are released only if down, and none is held over
    max_note_seconds (0 = no limit); see KeyTracker.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
    model.eval()
    x = torch.as_tensor(prefix, dtype=torch.long, device=device).unsqueeze(0).expand(num_samples, -1)
    logits, state = model(x)
    logits = logits[:, -1]
    step = model.decoder()
    banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
    banned[[tokenizer.pad_id, tokenizer.bos_id]] = True
    steps_per_second = getattr(tokenizer, "steps_per_second", None)
    shift_table = keys = None
    if steps_per_second and hasattr(tokenizer, "shift_steps"):
        shift_table = torch.as_tensor(tokenizer.shift_steps(np.arange(logits.shape[-1])), device=device)
        if hasattr(tokenizer, "note_on") and hasattr(tokenizer, "note_off"):
            hold = round((max_note_seconds or 0) * steps_per_second)
            keys = KeyTracker(tokenizer, prefix, num_samples, logits.shape[-1], device, max_hold_steps=hold)
    # Without a time signal in the tokens (REMI), bound the length by a generous event budget.
    max_events = events or int((seconds or 30) * (1000 if shift_table is None else 400))
    limit_steps = seconds * steps_per_second if (seconds and shift_table is not None and not events) else None
    out = torch.empty(num_samples, max_events, dtype=torch.long, device=device)
    elapsed = torch.zeros(num_samples, dtype=torch.long, device=device)
    done = torch.zeros(num_samples, dtype=torch.bool, device=device)
    n = 0
    for n in range(max_events):
        logits = logits.masked_fill(banned, float("-inf"))
        if keys is not None:
            logits = keys.mask(logits, elapsed)
        logp = filter_logits(logits, temperature, top_k, top_p, min_p)
        nxt = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, tokenizer.eos_id), nxt)
        out[:, n] = nxt
        if shift_table is not None:
            elapsed += shift_table[nxt]
        if keys is not None:
            keys.update(nxt, elapsed)
        done |= nxt == tokenizer.eos_id
        if limit_steps is not None:
            done |= elapsed >= limit_steps
        if progress:
            progress(n + 1, max_events, elapsed.min().item() / steps_per_second if shift_table is not None else None)
        if bool(done.all()):
            break
        logits, state = step(nxt, state)
    out = out[:, : n + 1].cpu().numpy()
    result = []
    for row in out:
        end = np.flatnonzero(row == tokenizer.eos_id)
        result.append(row[: end[0]] if len(end) else row)
    return result


# -- the command ------------------------------------------------------------------------------


def output_paths(output: Path, n: int) -> list[Path]:
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(1, n + 1)]


def _writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"output folder {folder} is not writable")


def write_midi_atomic(score, path: Path) -> None:
    with atomic_path(path) as tmp:
        score.dump_midi(str(tmp))


def compose(cfg: GenerateConfig, progress: bool = False) -> list[dict]:
    """Everything `generate` does: returns one dict per variation with its files and numbers."""
    cfg.validate()
    primer = None
    if cfg.primer:
        primer = primer_from_midi(cfg.primer, cfg.primer_seconds)
    elif cfg.primer_notes:
        primer = parse_primer_notes(cfg.primer_notes, cfg.primer_chord_seconds)
    _writable_folder(cfg.output.parent if str(cfg.output.parent) else Path("."))
    model = load_model(cfg.checkpoint, cfg.device)
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
                  device=cfg.device, progress=report, max_note_seconds=cfg.max_note_seconds)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    results = []
    for path, new in zip(output_paths(cfg.output, cfg.num_samples), rows):
        whole = tok.decode(np.concatenate([prefix, new]))
        if not cfg.primer_in_output and primer is not None:
            keep = whole.onset >= primer_end - 1e-9
            whole = Notes(whole.onset[keep] - primer_end, whole.offset[keep] - primer_end, whole.pitch[keep],
                          whole.velocity[keep])
        if cfg.seconds and not cfg.events:
            limit = cfg.seconds + (primer_end if cfg.primer_in_output else 0.0)
            keep = whole.onset < limit
            whole = Notes(whole.onset[keep], np.minimum(whole.offset[keep], limit), whole.pitch[keep], whole.velocity[keep])
        write_midi_atomic(notes_to_score(whole), path)
        files = {"midi": path}
        audio = [path.with_suffix(ext) for ext, wanted in ((".wav", cfg.wav), (".mp3", cfg.mp3)) if wanted]
        if audio:
            from .audio import render

            render(path, audio, soundfont=cfg.soundfont)  # one synthesis, every format
            files.update({p.suffix[1:]: p for p in audio})
        if cfg.plot:
            from .plot import piano_roll

            piano_roll(path, path.with_suffix(".png"), title=path.stem)
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
    length.add_argument("--seconds", type=float, default=30.0, help="seconds of music to compose (default 30)")
    length.add_argument("--events", type=int, default=None, help="number of events to compose instead of --seconds")
    p.add_argument("--temperature", type=float, default=1.0, help="> 1 wilder, < 1 safer (default 1.0)")
    p.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest events (0 = off)")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling: smallest set with this mass (1 = off)")
    p.add_argument("--min_p", type=float, default=0.0, help="drop events under min_p x the likeliest one (0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed: same seed and arguments, same notes")
    p.add_argument("--num_samples", type=int, default=1, help="variations composed in one batched pass")
    p.add_argument("--primer", type=Path, default=None, help="a MIDI file whose opening the piece continues")
    p.add_argument("--primer_seconds", type=float, default=None, help="use the primer's first S seconds")
    p.add_argument("--primer_notes", default=None, help='typed opening chords, e.g. "C4 E4 G4, F4 A4 C5"')
    p.add_argument("--primer_chord_seconds", type=float, default=0.5, help="length of each typed chord")
    p.add_argument("--no_primer_in_output", action="store_true", help="write only the continuation")
    p.add_argument("--max_note_seconds", type=float, default=MAX_NOTE_SECONDS,
                   help=f"release any key held this long (default {MAX_NOTE_SECONDS:g}; 0 = no limit)")
    p.add_argument("--wav", action="store_true", help="also write NAME.wav")
    p.add_argument("--mp3", action="store_true", help="also write NAME.mp3")
    p.add_argument("--plot", action="store_true", help="also write a piano-roll NAME.png")
    p.add_argument("--soundfont", type=Path, default=None, help="SF2 SoundFont for --wav/--mp3")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.set_defaults(func=_run)


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="compose a piece (MIDI, and optionally WAV, MP3 and a piano roll)",
                       description=__doc__.split("\n\n")[0])
    add_arguments(p)


def _run(args) -> int:
    cfg = GenerateConfig(
        output=args.output, checkpoint=args.checkpoint, seconds=None if args.events else args.seconds,
        events=args.events, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        seed=args.seed, num_samples=args.num_samples, primer=args.primer, primer_seconds=args.primer_seconds,
        primer_notes=args.primer_notes, primer_chord_seconds=args.primer_chord_seconds,
        primer_in_output=not args.no_primer_in_output, wav=args.wav, mp3=args.mp3, plot=args.plot,
        soundfont=args.soundfont, device=args.device, max_note_seconds=args.max_note_seconds,
    )
    for r in compose(cfg, progress=True):
        names = ", ".join(str(p) for p in r["files"].values())
        print(f"wrote {names}: {r['seconds']:.1f} s, {r['notes']} notes (seed {r['seed']}, "
              f"{r['events']} events in {r['wall_seconds']:.1f} s)")
    return 0


def main(argv=None) -> int:
    from .cli import run

    p = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args.func, args)
