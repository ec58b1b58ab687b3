"""Composing: sample events from the LSTM, one step per event, carrying its state.

    classical-music generate --output song.mid --seconds 30 --temperature 0.9 --mp3 --plot
    python generate.py --checkpoint checkpoints/best --output generated_song.mid

A primer (a MIDI file's opening, or typed notes such as "C4 E4 G4, F4 A4 C5") is run through the
model once; then every new event costs one LSTM step for the whole batch of variations, never a
re-run over a window. Same --seed and arguments -> the same notes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .. import conditions, memory
from .. import threads as cpu_threads
from ..audio import add_instrument_arguments
from ..errors import UserError
from ..files import atomic_path, staged_paths, writable_folder
from ..notes import notes_to_score
from . import composer, options
from .checkpoint import check_device, list_conditions, load_model
from .config import DECODE_PRECISIONS, MAX_EVENTS, MAX_SECONDS, MEMORY_MODES, GenerateConfig
from .form import DEFAULT_LONG_FORM, ENDINGS, THROUGH_UNDER_SECONDS
from .primer import MAX_PRIMER_EVENTS, parse_primer_notes, primer_from_midi, primer_tokens

# The docstring above is the help of `classical-music generate` and `python generate.py` (its
# first paragraph). compose() is the whole of a run: primer, model, sampling, then the files.


def output_paths(output: Path, n: int) -> list[Path]:
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(1, n + 1)]


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
    writable_folder(folder)
    paths = output_paths(cfg.output, cfg.num_samples)
    for path in paths:
        if path.is_dir():
            raise UserError(f"--output {path} is a folder: name a .mid file")
    instrument = None
    if cfg.wav or cfg.mp3:
        from ..audio import check_reverb, find_instrument

        check_reverb(cfg.reverb)
        instrument = find_instrument(cfg.piano, cfg.soundfont)  # a bad one stops us before composing, not after
    seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    plans = cfg.piece_plans(seed)  # a bad plan stops us before the model loads
    model = load_model(cfg.checkpoint, cfg.device)
    plans = cfg.piece_plans(seed, model)  # and its density, drawn from the checkpoint's
    memory = cfg.memory_options(model)
    tok = model.tokenizer
    prefix = primer_tokens(tok, primer)
    primer_end = 0.0 if primer is None else float(primer.offset.max())

    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.events or (round(cfg.seconds) if cfg.seconds else None), unit="s" if not cfg.events else "event",
                   desc="composing", leave=False)

    def report(fraction):
        if bar is not None:
            done = round(fraction * (bar.total or 0))
            if done != bar.n:  # redraw only on change: a redraw costs more than an LSTM step
                bar.n = done
                bar.refresh()

    comp = composer.compose(model, prefix, seconds=cfg.seconds, events=cfg.events, num_samples=cfg.num_samples,
                            seed=seed, style=cfg.style(), parsed=cfg.parsed_style, options=cfg.sampling,
                            plans=plans, asked_form=cfg.form is not None or cfg.plan is not None or cfg.ending is not None,
                            memory=memory, device=cfg.device, min_seconds=cfg.min_seconds, progress=report,
                            int8=None if cfg.precision == "auto" else cfg.precision == "int8")
    if bar is not None:
        bar.close()
    style = comp.labels

    pieces = []
    for path, new, (whole, pedals) in zip(paths, comp.rows, comp.pieces(tok, primer_end, cfg.primer_in_output,
                                                                         events=bool(cfg.events))):
        if len(whole) == 0:
            raise UserError(f"the model composed no notes for {path.name} in {len(new)} events: "
                            "ask for more --events or --seconds, or try another --seed")
        pieces.append((path, whole, new, pedals))

    # Every variation's MIDI, audio and picture land together or not at all.
    made = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        results = _write_pieces(cfg, pieces, seed, comp.wall, comp.plans,
                                primer_end if cfg.primer_in_output else 0.0, instrument)
        for r in results:
            r["conditions"] = style
            r["memory"] = memory.describe()
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


def _write_pieces(cfg: GenerateConfig, pieces, seed: int, wall: float, plans=None, primer: float = 0.0,
                  instrument=None) -> list[dict]:
    """Each variation's files; plans: each one's plan (None: no plan); primer: seconds of primer
    the MIDI opens with (sections start after it)."""
    results = []
    with staged_paths() as stage:
        for i, (path, whole, new, pedals) in enumerate(pieces):
            plan = None if plans is None else plans[i]
            midi = stage(path)
            write_midi(notes_to_score(whole, pedals=pedals), midi, path)
            files = {"midi": path}
            if plan is not None and not plan.through:  # a through piece's: the command line (and a drawn key, the wrote line)
                plan_path = path.with_suffix(".plan.json")
                stage(plan_path).write_text(plan.dumps(), encoding="utf-8")
                files["plan"] = plan_path
            audio = [path.with_suffix(ext) for ext, wanted in ((".wav", cfg.wav), (".mp3", cfg.mp3)) if wanted]
            if audio:
                from ..audio import render

                # one synthesis, every format
                render(midi, [stage(a) for a in audio], instrument=instrument, reverb=cfg.reverb)
                files.update({a.suffix[1:]: a for a in audio})
            if cfg.plot:
                from ..plot import piano_roll

                piano_roll(midi, stage(path.with_suffix(".png")), title=path.stem,
                           sections=None if plan is None or plan.through else plan.bands(primer))
                files["png"] = path.with_suffix(".png")
            results.append({"files": files, "notes": len(whole), "events": len(new), "seconds": whole.seconds,
                            "seed": seed, "wall_seconds": wall, "plan": None if plan is None else plan.to_json()})
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
                        help=f"number of events to compose instead of --seconds (at most {MAX_EVENTS:,}); a piece "
                             "counted in events has no plan: no form, no cadence, it stops at its last event")
    options.add_arguments(p, ("temperature", "top_k", "top_p", "min_p"))
    p.add_argument("--seed", type=int, default=None, help="random seed: same seed and arguments, same notes")
    p.add_argument("--num_samples", type=int, default=1, help="variations composed in one batched pass")
    p.add_argument("--primer", type=Path, default=None, help="a MIDI file whose opening the piece continues "
                   f"(at most {MAX_PRIMER_EVENTS:,} events, 5-10 minutes of piano; see --primer_seconds)")
    p.add_argument("--primer_seconds", type=float, default=None, help="use the primer's first S seconds")
    p.add_argument("--primer_notes", default=None, help='typed opening chords, e.g. "C4 E4 G4, F4 A4 C5"')
    p.add_argument("--primer_chord_seconds", type=float, default=0.5, help="length of each typed chord")
    p.add_argument("--no_primer_in_output", action="store_true", help="write only the continuation")
    options.add_arguments(p, ("max_note_seconds", "release"))
    p.add_argument("--min_seconds", type=float, default=None,
                   help="the model may end the piece itself only after this many seconds "
                        "(default: 80%% of --seconds, or of --events; 0 = whenever it likes)")
    p.add_argument("--wav", action="store_true", help="also write NAME.wav")
    p.add_argument("--mp3", action="store_true", help="also write NAME.mp3")
    p.add_argument("--plot", action="store_true", help="also write a piano-roll NAME.png")
    add_instrument_arguments(p, "--wav/--mp3")
    style = p.add_argument_group("style (see --list_conditions; each optional, default any)")
    conditions.add_arguments(style)
    options.add_arguments(style, ("guidance", "steer"))
    style.add_argument("--list_conditions", action="store_true",
                       help="print the styles the checkpoint knows (composers with their training hours) and exit")
    form = p.add_argument_group("the whole piece (a form, themes that return, an ending)")
    form.add_argument("--form", default=None,
                      help="section letters such as ABA, AABA, ABACA (rondo), AB, A (A' = a varied return), or "
                           f"through (one section); default: through under {THROUGH_UNDER_SECONDS:g} s, "
                           f"{DEFAULT_LONG_FORM} for longer pieces")
    form.add_argument("--plan", type=Path, default=None,
                      help='PLAN.json: [{"label": "A", "seconds": 40, "key": "D", "density": 6, "dynamics": "mf", '
                           '"tempo": 1.0, "composer": ..., "period": ...}, ...]')
    form.add_argument("--ending", choices=ENDINGS, default=None,
                      help="cadence (default): each section closes on dominant then tonic, the piece on the home "
                           "tonic with a ritardando and diminuendo; none: it stops where the time runs out")
    form.add_argument("--print_plan", action="store_true", help="print the plan used (also written as NAME.plan.json)")
    memory.add_arguments(p, MEMORY_MODES, "the checkpoint's config.json block's compose part: the shipped model's "
                         "is cache, the motifs recall; none without a block")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    cpu_threads.add_argument(p)
    p.add_argument("--precision", choices=DECODE_PRECISIONS, default="auto",
                   help="decoding matmuls: int8 is ~3x faster on the CPU at batch 1 and ~6.5x at batch 8, "
                        "scoring within ~2e-4 nats/event of float32 overall, though a seed's "
                        "piece differs between them (auto: int8 on the CPU, float32 elsewhere)")
    p.set_defaults(func=_run)


def add_parser(sub) -> None:
    from ..piano import CREDIT

    p = sub.add_parser("generate", help="compose a piece (MIDI, and optionally WAV, MP3 and a piano roll)",
                       description=__doc__.split("\n\n")[0], epilog=CREDIT)
    add_arguments(p)


def _run(args) -> int:
    cpu_threads.apply(args.threads)
    if args.guidance != 1 and not args.list_conditions and all(
            getattr(args, n) is None for n in conditions.NAMES):
        print(f"note: --guidance has nothing to follow without a style ({conditions.flags()}): "
              "the piece is composed unguided", file=sys.stderr)
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
        soundfont=args.soundfont, piano=args.piano, reverb=args.reverb, device=args.device,
        max_note_seconds=args.max_note_seconds, release=args.release, min_seconds=args.min_seconds,
        precision=args.precision, guidance=args.guidance, steer=args.steer, form=args.form, plan=args.plan,
        ending=args.ending, **{n: getattr(args, n) for n in conditions.NAMES},
        memory=args.memory, memory_theta=args.memory_theta, memory_lambda=args.memory_lambda,
        memory_size=args.memory_size, memory_gap=args.memory_gap, memory_events=args.memory_events,
        memory_register=args.memory_register, memory_recall=args.memory_recall,
    )
    if cfg.density is not None and cfg.density > conditions.DENSITY_MAX:
        print(f"note: --density {cfg.density:g} is more than the model learned (at most {conditions.DENSITY_MAX:g} "
              f"notes per second): composing at {conditions.DENSITY_MAX:g}", file=sys.stderr)
    results = compose(cfg, progress=True)
    if args.print_plan:
        for r in results:
            if len(results) > 1:
                print(f"{r['files']['midi']}:")
            plan = r["plan"]
            print(json.dumps(plan, indent=2, ensure_ascii=False) if plan else "plan: through, no ending (today's piece)")
    for r in results:
        names = ", ".join(str(p) for p in r["files"].values())
        used = dict(r["conditions"])
        plan = r["plan"] or {}
        if "key" in used and plan.get("home_key"):  # each variation's own
            used["key"] = plan["home_key"]
        # what was asked or drawn and steered to, not its bin (5.66 for 6)
        density = plan["sections"][0].get("density") if plan else None
        density = density if density is not None else cfg.density
        if "density" in used and density is not None:
            used["density"] = f"{conditions.clamp_density(density):g}"
        style = "".join(f", {k} {v}" for k, v in used.items())
        if r["conditions"] and cfg.guidance != 1:
            style += f", guidance {cfg.guidance:g}"
        mem = r.get("memory") or {}
        if mem.get("mode") == "cache":  # the default since the shipped block's compose part: say so
            style += f", memory {mem.get('recall', 'states')}"
        print(f"wrote {names}: {r['seconds']:.1f} s, {r['notes']} notes (seed {r['seed']}{style}, "
              f"{r['events']} events in {r['wall_seconds']:.1f} s)")
    return 0


def main(argv=None) -> int:
    from ..cli import run

    from ..cli import Parser

    p = Parser(prog="generate.py", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args.func, args)
