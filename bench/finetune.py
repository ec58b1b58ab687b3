"""`classical-music finetune` with its defaults, on music the shipped model never trained on.

    python bench/finetune.py [--corpus ../shared/data/classical-piano] [--minutes 10] [--out bench-out/finetune]
    python bench/finetune.py --recipes [--recipe_minutes 3]      # the recipe table instead

Folders: the shared corpus's valid split, its performances (a) and its sequenced files (b), each
copied into a folder of its own with a metadata.csv without a split, so finetune holds out a
fifth of its pieces by piece; and music from elsewhere, which the shipped model's sources (ASAP,
piano-midi.de) hold none of: scores exported to MIDI as notation programs do (one tempo, one
velocity, notes on the grid) from music21's corpus (`pip install music21`; skipped without it),
(c) Bach's four-part chorales and (d) string quartet movements by Haydn, Mozart and Beethoven. For each folder it runs finetune (defaults, one thread) and
reports, beside the shipped model (the peer, measured in the same run):

1. held-out nats/event, shipped → fine-tuned (goal: at least 0.05 lower);
2. the shipped corpus's valid split, the files not in the folder (finetune's own check), shipped
   → fine-tuned (goal: rises by at most 0.05);
3. pieces composed by each model at the same seeds (32 × 30 s, defaults: through-composed; and
   32 × 120 s, defaults: AABA, whose density is drawn from the checkpoint's opening_density, the
   folder's for the fine-tuned model; the fine-tuned model's pieces of either length in keys drawn
   from its home_keys, the folder's), their mean overlap area (`compare` statistics) with the
   folder's held-out pieces' first SECONDS (goal: the fine-tuned model's higher).

--recipes: finetune one folder (--recipe_folder, default the sequenced one) with each recipe (full, top, lora) for --recipe_minutes
and prints the held-out gain per minute of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "classical_music.cli"]
SEEDS = 32  # with 8, one chorale model read 0.441 and with 32, 0.479: 8 sits within the seeds' noise; composing takes seconds


def make_folder(corpus: Path, kind: str, out: Path) -> Path:
    """The valid split's files of one kind, copied with their metadata (no split column)."""
    rows = [r for r in csv.DictReader(open(corpus / "metadata.csv", encoding="utf-8"))
            if r["split"] == "valid" and r["kind"] == kind]
    folder = out / f"valid-{kind}"
    if folder.exists():
        shutil.rmtree(folder)
    for r in rows:
        dst = folder / r["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / r["path"], dst)
    cols = [c for c in rows[0] if c != "split"]
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return folder


ELSEWHERE = {  # folder name -> music21 corpus composers, and which of their works
    "chorales": (("bach",), lambda p: p.name.startswith("bwv") and p.suffix == ".mxl"),
    # K. 545 sits among Mozart's quartets there, but it is a piano sonata (and piano-midi.de's)
    "quartets": (("haydn", "mozart", "beethoven"), lambda p: p.suffix in (".mxl", ".krn") and "k545" not in p.parts),
}


def make_elsewhere(name: str, out: Path) -> Path | None:
    """Folder `name` of ELSEWHERE: music21's scores written as MIDI (composer and piece in a
    metadata.csv, a piece being a work: a chorale's BWV number, a quartet's opus), or None
    without music21."""
    try:
        from music21 import corpus as m21
    except ImportError:
        print(f"{name}: skipped (pip install music21 for its corpus)", flush=True)
        return None
    composers, keep = ELSEWHERE[name]
    folder = out / name
    if (folder / "metadata.csv").is_file():
        return folder
    jobs = {}  # by the MIDI file written: a movement encoded twice (.krn and .mxl) is written once
    for composer in composers:
        paths = sorted(Path(p) for p in m21.getComposer(composer))
        root = next(a for a in paths[0].parents if a.name == composer)  # the composer's folder in the corpus
        for path in paths:
            if keep(path):
                rel = path.relative_to(root)
                piece = (rel.stem.split(".")[0] if name == "chorales" else rel.parts[0].split(".")[0])
                dst = str(folder / composer / rel.with_suffix(".mid"))
                jobs.setdefault(dst, (str(path), dst, composer, f"{composer} {piece}"))
    jobs = list(jobs.values())
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        done = [j for j, ok in zip(jobs, pool.map(_write_midi, jobs, chunksize=8)) if ok]
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "composer", "title", "piece"])
        for src, dst, composer, piece in done:
            w.writerow([Path(dst).relative_to(folder).as_posix(), composer, Path(dst).stem, piece])
    print(f"{name}: {len(done)} of {len(jobs)} scores written as MIDI", flush=True)
    return folder


def _write_midi(job) -> bool:
    from music21 import converter

    src, dst, _, _ = job
    try:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        converter.parse(src).write("midi", fp=dst)
        return True
    except Exception:  # a score music21 cannot export is left out, as a user's broken file would be
        return False


def finetune(folder: Path, model: Path, minutes: float, corpus: Path, extra=()) -> dict:
    cmd = [*CLI, "finetune", str(folder), "--out", str(model), "--minutes", str(minutes), "--threads", "1",
           "--reference", str(corpus), "--overwrite", "--no_progress", *extra]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if p.returncode:
        sys.exit(f"finetune failed:\n{p.stderr[-3000:]}")
    print(p.stdout.strip().splitlines()[-2], flush=True)
    r = json.loads((model / "finetune.json").read_text(encoding="utf-8"))
    r["wall_seconds"] = time.perf_counter() - t
    return r


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE / "src")}


def overlap(checkpoint: str | None, held_out: list[Path], out: Path, seconds: int = 30) -> float:
    """Mean overlap area of SEEDS pieces of `seconds` composed at fixed seeds with the held-out
    pieces (with 120 s, their first 120 s)."""
    from classical_music.compare import compare_sets

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = [*CLI, "generate", "--output", str(out / "piece.mid"), "--seconds", str(seconds), "--num_samples", str(SEEDS),
           "--seed", "2026", "--threads", "1"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if p.returncode:
        sys.exit(f"generate failed:\n{p.stderr[-3000:]}")
    if seconds == 30:
        return compare_sets([out], held_out)["mean_overlap_area"]
    return _first_seconds_oa(out, held_out, seconds)


def _first_seconds_oa(out: Path, held_out: list[Path], seconds: float) -> float:
    sys.path.insert(0, str(HERE / "bench"))
    from control import mean_oa, pooled
    from form import first

    from classical_music.compare import load_notes

    gen = [load_notes(p) for p in sorted(out.glob("*.mid"))]
    return mean_oa(pooled(gen), pooled([first(load_notes(p), seconds) for p in held_out]))


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")), platform.processor())
    except OSError:
        name = platform.processor()
    return f"{name}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the start), PyTorch {_torch()}"


def _torch() -> str:
    import torch

    return torch.__version__


def get_folder(name: str, corpus: Path, out: Path) -> Path | None:
    return make_elsewhere(name, out) if name in ELSEWHERE else make_folder(corpus, name, out)


def run_recipes(args, corpus: Path, out: Path) -> None:
    folder = get_folder(args.recipe_folder, corpus, out)
    if folder is None:
        sys.exit(f"no folder {args.recipe_folder}")
    print(f"machine: {machine()}\n")
    rows = []
    for spec in args.recipe_list.split(","):
        recipe, _, lr = spec.partition(":")
        extra = ["--recipe", recipe] + (["--lr", lr] if lr else [])
        r = finetune(folder, out / f"recipe-{args.recipe_folder}-{recipe}-{lr or 'default'}", args.recipe_minutes, corpus, extra)
        h = r["held_out"]
        gain = h["shipped"] - h["yours"]
        rows.append((recipe, r["lr"], r["trainable"], r["steps"], r["train_tokens"], r["minutes"], h["shipped"],
                     h["yours"], gain, gain / max(r["minutes"], 1e-9), r["reference"].get("yours")))
    print("| recipe | lr | parameters learning | steps | events seen | minutes | held-out shipped → yours | gain | "
          "gain per minute | shipped-corpus valid after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rec, lr, n, steps, tok, mins, a, b, g, gpm, ref in rows:
        print(f"| {rec} | {lr:g} | {n:,} | {steps} | {tok:,} | {mins:.1f} | {a:.4f} → {b:.4f} | {g:.4f} | {gpm:.4f} | "
              f"{'n/a' if ref is None else f'{ref:.4f}'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=HERE.parent / "shared" / "data" / "classical-piano")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--recipes", action="store_true", help="compare the recipes instead")
    ap.add_argument("--recipe_minutes", type=float, default=3.0)
    ap.add_argument("--recipe_list", default="full,top,lora", help="recipes to try, RECIPE or RECIPE:LR, comma-separated")
    ap.add_argument("--recipe_folder", default="sequenced", help="the folder --recipes compares on (a --kinds name)")
    ap.add_argument("--kinds", default="performance,sequenced,chorales,quartets",
                    help="folders: performance and sequenced (the corpus's valid split), chorales and quartets (music21)")
    ap.add_argument("--out", type=Path, default=HERE / "bench-out" / "finetune")
    args = ap.parse_args()
    if not (args.corpus / "metadata.csv").is_file():
        sys.exit(f"no corpus at {args.corpus}: pass --corpus")
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE / "src"))
    if args.recipes:
        run_recipes(args, args.corpus, args.out)
        return
    print(f"machine: {machine()}\n")
    rows = []
    for kind in args.kinds.split(","):
        folder = get_folder(kind, args.corpus, args.out)
        if folder is None:
            continue
        model = args.out / f"model-{kind}"
        r = finetune(folder, model, args.minutes, args.corpus)
        held = [folder / k for k in r["data"]["held_out"]]
        oa_shipped = overlap(None, held, args.out / f"gen-{kind}-shipped")
        oa_yours = overlap(str(model), held, args.out / f"gen-{kind}-yours")
        long = (overlap(None, held, args.out / f"gen120-{kind}-shipped", 120),
                overlap(str(model), held, args.out / f"gen120-{kind}-yours", 120))
        rows.append((kind, r, oa_shipped, oa_yours, long))
    print("| folder | learn / held out | trained | held-out nats/event shipped → yours | goal ≤ −0.05 | "
          "shipped-corpus valid shipped → yours | goal ≤ +0.05 | overlap with held-out, shipped / yours (30 s; "
          "120 s) | goal higher |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, r, oa_s, oa_y, (l_s, l_y) in rows:
        h, ref, d = r["held_out"], r["reference"], r["data"]
        dh = h["yours"] - h["shipped"]
        dr = None if ref.get("shipped") is None else ref["yours"] - ref["shipped"]
        print(f"| {'valid ' * (kind not in ELSEWHERE)}{kind} | {d['train_pieces']} pieces ({d['train_hours']:.2f} h) / {h['pieces']} pieces "
              f"({d['held_out_files']} files) | {r['steps']} steps, {r['minutes']:.1f} min ({r['stop_reason']}) | "
              f"{h['shipped']:.4f} → {h['yours']:.4f} ({dh:+.4f}) | {'yes' if dh <= -0.05 else 'no'} | "
              + ("not measured | - " if dr is None else
                 f"{ref['shipped']:.4f} → {ref['yours']:.4f} ({dr:+.4f}) | {'yes' if dr <= 0.05 else 'no'} ")
              + f"| {oa_s:.3f} / {oa_y:.3f}; {l_s:.3f} / {l_y:.3f} | {'yes' if oa_y > oa_s else 'no'}; "
              f"{'yes' if l_y > l_s else 'no'} |")
    print(f"\nreference subset: {rows[0][1]['reference']['what']}; held-out: {rows[0][1]['held_out']['what']}")


if __name__ == "__main__":
    main()
