"""Whole pieces (issue 23): do forms bring themes back, end on the tonic, keep the planned keys, and
stay as realistic and as fast as composing through? Pieces from `generate` with each form, with
--form through (with its cadence ending, and with none: the piece of before forms), and the valid
split's real pieces, side by side.

    OMP_NUM_THREADS=1 python bench/form.py --pieces 64 --batch 4 --seconds 120 --forms AABA,ABA

Measures (per set; the issue defines them):
  recurrence   share of the top voice's interval 6-grams (top voice: the highest pitch of each
               onset cluster, onsets within 50 ms) already heard at least 4 s earlier in the piece:
               median (quartiles)
  consonant    the pitch classes sounding at the last onset, relative to the lowest, all in
               {0, 3, 4, 7}; "on tonic": and that lowest note is the planned home tonic
  keys         Krumhansl-Schmuckler key of each section's notes = its planned key (or its relative)
  OA           mean overlap area (compare's features) with the valid split's first SECONDS
  copy         the longest span copied note for note (same pitches, onsets within 20 ms of the
               earlier span's) as a share of the piece: median and max
  events/s     composing speed (sampling only), batches of --batch variations
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from classical_music import conditions as C  # noqa: E402
from classical_music.compare import load_notes  # noqa: E402
from classical_music.generate import GenerateConfig, compose  # noqa: E402
from classical_music.notes import MidiReadError, Notes  # noqa: E402
from control import corpus_files, mean_oa, pooled  # noqa: E402

CLUSTER = 0.05
NGRAM = 6
EARLIER = 4.0
COPY_TOLERANCE = 0.02
CONSONANT = {0, 3, 4, 7}


def top_voice(notes: Notes) -> tuple[np.ndarray, np.ndarray]:
    """(onset, pitch) of the highest note of each onset cluster (a cluster: onsets within 50 ms of its first)."""
    order = np.lexsort((notes.pitch, notes.onset))
    on, pitch = notes.onset[order], notes.pitch[order].astype(np.int64)
    times, tops = [], []
    start = -np.inf
    for t, p in zip(on.tolist(), pitch.tolist()):
        if t - start > CLUSTER:
            start = t
            times.append(t)
            tops.append(p)
        elif p > tops[-1]:
            tops[-1] = p
    return np.array(times), np.array(tops, np.int64)


def recurrence(notes: Notes) -> float | None:
    t, p = top_voice(notes)
    iv = np.diff(p)
    if len(iv) < NGRAM:
        return None
    first: dict[tuple, float] = {}
    hits = total = 0
    for i in range(len(iv) - NGRAM + 1):
        g = tuple(iv[i:i + NGRAM].tolist())
        total += 1
        if g in first and first[g] <= t[i] - EARLIER:
            hits += 1
        first.setdefault(g, t[i])
    return hits / total


def ending(notes: Notes) -> tuple[bool, int | None]:
    """(consonant, lowest pitch class) of what sounds at the last onset."""
    last = notes.onset.max()
    sounding = (notes.onset <= last + 1e-6) & (notes.offset > last + 1e-6)
    pitch = notes.pitch[sounding].astype(np.int64)
    if not len(pitch):
        return False, None
    low = pitch.min()
    return {int(x) for x in (pitch - low) % 12} <= CONSONANT, int(low % 12)


def longest_copy(notes: Notes) -> float:
    """Seconds of the longest run of consecutive notes that repeats an earlier run note for note."""
    order = np.lexsort((notes.pitch, notes.onset))
    on, pitch = notes.onset[order], notes.pitch[order]
    n, best = len(on), 0.0
    for lag in range(1, n):
        same = (pitch[lag:] == pitch[:-lag])
        # onsets relative to the run's start agree within 20 ms: consecutive gaps agree (checked per step)
        gap_ok = np.abs(np.diff(on[lag:]) - np.diff(on[:-lag])) <= COPY_TOLERANCE
        ok = same[1:] & same[:-1] & gap_ok  # pair k -> k+1 continues the run
        if not ok.any():
            continue
        # longest run of True in ok, with its time span on the copy's side
        idx = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
        starts, ends = idx[::2], idx[1::2]
        spans = on[lag:][ends] - on[lag:][starts]
        best = max(best, float(spans.max()))
    return best


def section_keys(notes: Notes, plan: dict) -> list[tuple[int, int | None]]:
    """(planned, estimated) key of each section that plans one."""
    out, t = [], 0.0
    for s in plan["sections"]:
        a, b = t, t + s["seconds"]
        t = b
        if not s.get("key"):
            continue
        keep = (notes.onset >= a) & (notes.onset < b)
        sub = Notes(notes.onset[keep], notes.offset[keep], notes.pitch[keep], notes.velocity[keep])
        out.append((C.parse_key(s["key"]), C.estimate_key(sub.pitch, C.note_durations(sub))))
    return out


def first(notes: Notes, seconds: float) -> Notes:
    t0 = notes.onset.min()
    keep = notes.onset < t0 + seconds
    return Notes(notes.onset[keep] - t0, np.minimum(notes.offset[keep], t0 + seconds) - t0, notes.pitch[keep],
                 notes.velocity[keep])


def measure(pieces: list[tuple[Notes, dict | None]], whole_endings: list[Notes] | None = None) -> dict:
    rec = [r for r in (recurrence(n) for n, _ in pieces) if r is not None]
    ends = [ending(n) for n in (whole_endings or [n for n, _ in pieces])]
    on_tonic = []
    keys = []
    for (n, plan), (ok, low) in zip(pieces, ends):
        if plan and plan.get("home_key"):
            on_tonic.append(ok and low == C.parse_key(plan["home_key"]) % 12)
        if plan:
            keys += section_keys(n, plan)
    copies = [longest_copy(n) / max(n.offset.max(), 1e-9) for n, _ in pieces]
    return {
        "pieces": len(pieces),
        "recurrence": {"median": float(np.median(rec)), "q1": float(np.percentile(rec, 25)),
                       "q3": float(np.percentile(rec, 75))} if rec else None,
        "consonant_endings": float(np.mean([ok for ok, _ in ends])),
        "on_planned_tonic": float(np.mean(on_tonic)) if on_tonic else None,
        "section_key": float(np.mean([p == e for p, e in keys])) if keys else None,
        "section_key_or_relative": float(np.mean([e in (p, C.relative_key(p)) for p, e in keys])) if keys else None,
        "sections": len(keys),
        "copy": {"median": float(np.median(copies)), "max": float(np.max(copies))},
    }


def generated(form: str | None, ending: str | None, args, folder: Path) -> tuple[list, float]:
    pieces, events, wall = [], 0, 0.0
    for b in range(args.pieces // args.batch):
        out = folder / f"{(form or 'default').replace(chr(39), 'p')}-{ending}-{b}.mid"
        t0 = time.perf_counter()
        results = compose(GenerateConfig(output=out, seconds=args.seconds, seed=args.seed + b, num_samples=args.batch,
                                         form=form, ending=ending, temperature=args.temperature))
        print(f"  {form} {ending} batch {b}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        for r in results:
            pieces.append((load_notes(r["files"]["midi"]), r["plan"]))
            events += r["events"]
        wall += results[0]["wall_seconds"]
    return pieces, events / wall


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pieces", type=int, default=32)
    p.add_argument("--batch", type=int, default=1, help="variations composed together (same for every set); they share a seed, so its density draw: 32 pieces in batches of 8 sample only 4 draws")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--forms", default="ABA,AABA,ABACA")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=2300)
    p.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "classical-piano")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    args.pieces = max(args.batch, args.pieces // args.batch * args.batch)

    real, real_whole = [], []
    for path, split, *_ in corpus_files(args.corpus):
        if split != "valid":
            continue
        try:
            whole = load_notes(path)
        except MidiReadError:
            continue
        real.append((first(whole, args.seconds), None))
        real_whole.append(whole)
    print(f"{len(real)} real valid pieces", file=sys.stderr, flush=True)
    real_feats = pooled([n for n, _ in real])

    rows = {}
    m = measure(real, real_whole)
    m["overlap_area"], m["events_per_second"] = None, None
    rows[f"real valid (first {args.seconds:g} s; endings of whole pieces)"] = m
    forms = args.forms.split(",")
    # the first form and its peers first, so a run cut short still has the comparison
    sets = [(forms[0], "cadence"), ("through", "cadence"), ("through", "none")] + [(f, "cadence") for f in forms[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        for form, ending in sets:
            pieces, speed = generated(form, ending, args, Path(tmp))
            m = measure(pieces)
            m["overlap_area"] = mean_oa(pooled([n for n, _ in pieces]), real_feats)
            m["events_per_second"] = speed
            rows[f"--form {form}" + (" --ending none" if ending == "none" else "")] = m
            print(table(rows, args), flush=True)  # the table so far
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _pct(x):
    return "—" if x is None else f"{100 * x:.0f} %"


def table(rows: dict, args) -> str:
    head = ("| set | recurrence median (q1-q3) | consonant endings | on planned tonic | section key (or relative) "
            "| OA vs real | longest copy median / max | events/s |")
    lines = [f"{args.pieces} pieces of {args.seconds:g} s each (temperature {args.temperature:g}, seeds "
             f"{args.seed}+, batches of {args.batch})", "", head, "|" + "---|" * 8]
    for name, m in rows.items():
        r = m["recurrence"]
        rec = "—" if r is None else f"{r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f})"
        keys = "—" if m["section_key"] is None else f"{_pct(m['section_key'])} ({_pct(m['section_key_or_relative'])})"
        oa = "—" if m["overlap_area"] is None else f"{m['overlap_area']:.3f}"
        eps = "—" if m["events_per_second"] is None else f"{m['events_per_second']:,.0f}"
        lines.append(f"| {name} | {rec} | {_pct(m['consonant_endings'])} | {_pct(m['on_planned_tonic'])} | {keys} | "
                     f"{oa} | {_pct(m['copy']['median'])} / {_pct(m['copy']['max'])} | {eps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
