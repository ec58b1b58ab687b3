"""Memory of the piece (issue 26): does the cache / dynamic evaluation predict real music better,
make generated pieces repeat their motifs more, and stay fast?

    OMP_NUM_THREADS=1 python bench/memory.py [--checkpoint DIR] [--corpus ../shared/data/classical-piano]
        [--parts likelihood,speed,generation] [--dynamic_files 12] [--pieces 32 --seconds 120] [--json out.json]

1. likelihood: valid whole-file nats/event, float32, with --memory none / cache / dynamic / both,
   on the tune half (the pieces tune-memory chose the parameters on), the held-out half and all.
   The cache's parameters come from the checkpoint's `memory` block (classical-music tune-memory);
   dynamic evaluation costs a forward and a backward pass per event, one file at a time, so it runs
   on --dynamic_files files of each half (the same files scored by none, for the comparison).
2. speed: evaluate on --speed_files valid files with and without the cache (lanes as evaluate's
   default), and dynamic evaluation's events/s; generation events/s at batch 1 and batch 8, int8,
   with and without the cache (the block's, its compose part's and any --settings), best of
   --rounds interleaved rounds.
3. generation: --pieces pieces of --seconds s as `generate` composes them (its default form), one
   seed each (--seed0, 2300+ as bench/form.py), with and without the cache (--settings
   THETA:LAMBDA:N[:GAP[:EVENTS[:REGISTER[:RECALL]]]], e.g. 1:0.95:4000:100:notes:7:motifs, or the
   tuned block's): the top voice's recurrence (bench/form.py's, as issue 23 defines it), its
   change piece by piece at equal seeds, the mean overlap area (compare's features) with the valid
   split's first --seconds, and events/s; real valid pieces' recurrence beside them (the peer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from classical_music import memory as M  # noqa: E402
from classical_music.evaluate import collect, evaluate, file_metadata  # noqa: E402
from classical_music.compare import load_notes  # noqa: E402
from classical_music.generate import GenerateConfig, compose, load_model, sample  # noqa: E402
from classical_music.memory_tune import half  # noqa: E402
from classical_music.notes import Notes  # noqa: E402
from control import mean_oa, overlaps, pooled, read_notes  # noqa: E402
from form import first, recurrence  # noqa: E402  (issue 23 defines the measure; one home for it)

SHARED = ROOT.parent / "shared" / "data" / "classical-piano"


def halves(corpus: Path, files) -> dict[str, str]:
    meta = file_metadata([corpus])
    return {str(f): half(str((meta.get(str(f)) or {}).get("piece") or f)) for f in files}


def _key(path) -> str:
    """One spelling per file: tune-memory's arrays, evaluate and collect may each write it differently."""
    return str(Path(path).resolve())


def summarize(per_file: dict[str, tuple[float, int]], which: dict[str, str]) -> dict[str, float]:
    which = {_key(k): v for k, v in which.items()}
    out = {}
    for name in ("tune", "held-out", "all"):
        sel = [v for k, v in per_file.items() if name == "all" or which[_key(k)] == name]
        out[name] = round(sum(n for n, _ in sel) / sum(e for _, e in sel), 5) if sel else None
    return out


def scored(model, files, memory, lanes=None) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = evaluate(model, files, progress="lines", memory=memory, lanes=lanes)
    wall = time.perf_counter() - t0
    return {f["path"]: (f["nats_per_event"] * f["events"], f["events"]) for f in r["per_file"]}, r["events"] / wall


def from_arrays(folder: Path, tuned: M.Memory) -> tuple[dict, dict]:
    """Per-file (nats, events) with none and with the tuned cache, from tune-memory's --arrays (the
    same numbers evaluate gives, tests/test_memory.py checks, without two more passes)."""
    from classical_music.memory_tune import load_arrays, mixed_nats

    none, cache = {}, {}
    for r in load_arrays(folder):
        th, sz = [float(x) for x in r["thetas"]], [int(x) for x in r["sizes"]]
        lpc = r["lpc"][th.index(tuned.theta), sz.index(tuned.size)]
        none[_key(r["path"])] = (float(-r["lp"].sum(dtype=np.float64)), len(r["lp"]))
        cache[_key(r["path"])] = (mixed_nats(r["lp"], lpc, tuned.lam), len(r["lp"]))
    return none, cache


def likelihood(model, corpus: Path, tuned: M.Memory, dynamic_files: int, arrays: Path | None) -> dict:
    files = collect([corpus], split="valid")
    which = halves(corpus, files)
    if arrays is not None:
        none, cache = from_arrays(arrays, tuned)
        files = [f for f in files if _key(f) in none]
    else:
        none, _ = scored(model, files, None)
        cache, _ = scored(model, files, M.with_mode(tuned, "cache"))
        none, cache = ({_key(k): v for k, v in d.items()} for d in (none, cache))
    out: dict = {"files": len(files), "none": summarize(none, which), "cache": summarize(cache, which)}
    print("likelihood none", out["none"], "cache", out["cache"], flush=True)
    if dynamic_files:
        # dynamic evaluation is a forward and a backward pass per event, one file at a time: the
        # shortest files of each half, so that it fits beside the others on a shared machine
        pick = [f for h in ("tune", "held-out")
                for f in sorted((f for f in files if which[str(f)] == h), key=lambda f: none[_key(f)][1])[:dynamic_files]]
        sub = {_key(f): none[_key(f)] for f in pick}
        dyn, dyn_speed = scored(model, pick, M.with_mode(tuned, "dynamic"))
        print("dynamic", summarize(dyn, which), round(dyn_speed), "events/s", flush=True)
        both, both_speed = scored(model, pick, M.with_mode(tuned, "both"))
        out["subset"] = {"files": len(pick), "events": sum(e for _, e in sub.values()),
                         "none": summarize(sub, which), "cache": summarize({k: cache[k] for k in sub}, which),
                         "dynamic": summarize(dyn, which), "both": summarize(both, which),
                         "dynamic_events_per_s": round(dyn_speed), "both_events_per_s": round(both_speed)}
        print("likelihood subset", out["subset"], flush=True)
    return out


def speed(model, corpus: Path, tuned: M.Memory, n_files: int, rounds: int, settings=()) -> dict:
    files = collect([corpus], split="valid")[:n_files]
    ev: dict = {"none": [], "cache": []}
    for _ in range(rounds):
        for name, mem in (("none", None), ("cache", M.with_mode(tuned, "cache"))):
            ev[name].append(scored(model, files, mem)[1])
    out = {"evaluate_files": len(files), "evaluate_events_per_s": {k: round(max(v)) for k, v in ev.items()}}
    gen: dict = {}
    tok = model.tokenizer
    runs = [("none", None), ("cache", M.with_mode(tuned, "cache"))]
    composed = M.composing(model, "cache")  # what `generate --memory cache` takes: the block's compose part
    if composed != runs[1][1]:
        runs.append(("compose", composed))
        out["compose"] = composed.describe()
    runs += [(setting_name(m), m) for m in settings]
    for batch in (1, 8):
        for name, mem in runs:
            best = 0.0
            for r in range(rounds):
                t0 = time.perf_counter()
                rows = sample(model, tok, np.array([tok.bos_id]), num_samples=batch, events=2000, seed=r,
                              min_events=2000, memory=mem)
                best = max(best, sum(len(x) for x in rows) / (time.perf_counter() - t0))
            gen[f"batch {batch} {name}"] = round(best)
    out["generate_events_per_s"] = gen
    print("speed", out, flush=True)
    return out


def pieces(checkpoint, n: int, seconds: float, memory: M.Memory | None, folder: Path, seed0: int = 2300) -> tuple[list[Notes], float]:
    """n pieces as `generate` composes them (its default form), one seed each (2300 + i, as
    bench/form.py), with the cache's parameters given or none; and their events/s."""
    kw = {"memory": "none"} if memory is None else {
        "memory": "cache", "memory_theta": memory.theta, "memory_lambda": memory.lam, "memory_size": memory.size,
        "memory_gap": memory.gap, "memory_events": memory.events, "memory_register": memory.register,
        "memory_recall": memory.recall}
    out, events, wall = [], 0, 0.0
    for i in range(n):
        r = compose(GenerateConfig(output=folder / f"s{i}.mid", checkpoint=checkpoint, seconds=seconds,
                                   seed=seed0 + i, **kw))[0]
        out.append(load_notes(r["files"]["midi"]))
        events += r["events"]
        wall += r["wall_seconds"]
    return out, events / wall


def setting_name(m: M.Memory) -> str:
    extra = ((f", gap {m.gap}" if m.gap else "") + (f", {m.events} only" if m.events != "all" else "")
             + (f", register {m.register:g}" if m.register else "") + (f", {m.recall}" if m.recall != "states" else ""))
    return f"cache theta {m.theta:g}, lambda {m.lam:g}, N {m.size}{extra}"


def parse_setting(text: str) -> M.Memory:
    """THETA:LAMBDA:N[:GAP[:EVENTS[:REGISTER[:RECALL]]]] -> a cache Memory."""
    t, lam, n, *rest = text.split(":")
    return M.Memory("cache", theta=float(t), lam=float(lam), size=int(n), gap=int(rest[0]) if rest else 0,
                    events=rest[1] if len(rest) > 1 else "all", register=float(rest[2]) if len(rest) > 2 else 0.0,
                    recall=rest[3] if len(rest) > 3 else "states")


def generation(checkpoint, corpus: Path, tuned: M.Memory, n: int, seconds: float, settings, skip_none=False,
               seed0: int = 2300) -> dict:
    """Recurrence (bench/form.py's measure), its paired change against none at equal seeds, the mean
    overlap area with the valid split's first `seconds` and events/s, for none and each cache setting."""
    real = [first(x, seconds) for x in (read_notes(f) for f in collect([corpus], split="valid")) if x is not None and len(x)]
    real_feats = pooled(real)

    def rec_stats(ps):
        rec = [r for r in map(recurrence, ps) if r is not None]
        return {"median": round(float(np.median(rec)), 4), "mean": round(float(np.mean(rec)), 4), "pieces": len(rec)}

    out = {"real valid": {"recurrence": rec_stats(real)}}
    runs = [("none", None)] * (not skip_none) + [
        (setting_name(m), m) for m in settings]
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for j, (name, mem) in enumerate(runs):
            ps, eps = pieces(checkpoint, n, seconds, mem, Path(tmp) / str(j), seed0)
            rec = [recurrence(p) for p in ps]
            v = {"recurrence": rec_stats(ps), "mean_oa_valid": round(mean_oa(pooled(ps), real_feats), 4),
                 "overlaps": {k: round(float(x), 3) for k, x in overlaps(pooled(ps), real_feats).items()},
                 "events_per_s": round(eps), "per_piece": [None if r is None else round(r, 4) for r in rec]}
            if mem is None:
                base = (rec, eps)
            elif base is not None:
                d = np.array([r - b for r, b in zip(rec, base[0]) if r is not None and b is not None])
                v["recurrence_change"] = {"mean": round(float(d.mean()), 4),
                                          "se": round(float(d.std(ddof=1) / math.sqrt(len(d))), 4),
                                          "higher": int((d > 0).sum()), "pieces": len(d)}
                v["slower"] = round(base[1] / eps, 2)
            out[name] = v
            print("generation", name, v, flush=True)
    return out


def table(report: dict) -> str:
    lines = []
    lk = report.get("likelihood")
    if lk:
        lines += ["| valid nats/event (float32) | tune half | held-out half | all |", "|---|---|---|---|"]
        for mode in ("none", "cache"):
            v = lk[mode]
            lines.append(f"| {mode} ({lk['files']} files) | {v['tune']} | {v['held-out']} | {v['all']} |")
        sub = lk.get("subset")
        if sub:
            for mode in ("none", "cache", "dynamic", "both"):
                v = sub[mode]
                lines.append(f"| {mode}, subset of {sub['files']} files ({sub['events']:,} events) | {v['tune']} | "
                             f"{v['held-out']} | {v['all']} |")
    sp = report.get("speed")
    if sp:
        e = sp["evaluate_events_per_s"]
        lines += ["", "| speed | none | cache | ratio |", "|---|---|---|---|",
                  f"| evaluate, {sp['evaluate_files']} valid files, events/s | {e['none']:,} | {e['cache']:,} | "
                  f"{e['none'] / e['cache']:.2f}x |"]
        g = sp["generate_events_per_s"]
        for b in (1, 8):
            for name in [k[len(f"batch {b} "):] for k in g if k.startswith(f"batch {b} ") and not k.endswith(" none")]:
                lines.append(f"| generate batch {b} (int8), events/s, {name} | "
                             f"{g[f'batch {b} none']:,} | {g[f'batch {b} {name}']:,} | "
                             f"{g[f'batch {b} none'] / g[f'batch {b} {name}']:.2f}x |")
    gen = report.get("generation")
    if gen:
        lines += ["", "| pieces | top-voice recurrence median (mean) | change at equal seeds (± s.e.; pieces higher) "
                      "| mean OA with the valid split | events/s (slower) |", "|---|---|---|---|---|"]
        for name, v in gen.items():
            r, c = v["recurrence"], v.get("recurrence_change")
            change = f"{c['mean']:+.4f} ± {c['se']:.4f}; {c['higher']} of {c['pieces']}" if c else ""
            speed_ = f"{v['events_per_s']:,}" + (f" ({v['slower']}x)" if "slower" in v else "") if "events_per_s" in v else ""
            lines.append(f"| {name} | {r['median']} ({r['mean']}) | {change} | {v.get('mean_oa_valid', '')} | {speed_} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--corpus", type=Path, default=SHARED)
    ap.add_argument("--parts", default="likelihood,speed,generation")
    ap.add_argument("--dynamic_files", type=int, default=6, help="files of each half scored with dynamic evaluation")
    ap.add_argument("--speed_files", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pieces", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed0", type=int, default=2300, help="generation: the first seed (2300 as bench/form.py)")
    ap.add_argument("--settings", nargs="+", default=None, metavar="THETA:LAMBDA:N[:GAP[:EVENTS[:REGISTER[:RECALL]]]]",
                    help="generation: cache settings to compose with (default: the block's compose part)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=None, help="generation: the block's cache with "
                    "these lambdas instead")
    ap.add_argument("--skip_none", action="store_true", help="generation: only the cache settings (none measured before)")
    ap.add_argument("--theta", type=float, default=None, help="override the tuned theta")
    ap.add_argument("--size", type=int, default=None, help="override the tuned size")
    ap.add_argument("--arrays", type=Path, default=None,
                    help="tune-memory --arrays folder: none and cache per file from there instead of two evaluate passes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.corpus / "metadata.csv").exists():
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model(args.checkpoint)
    tuned = M.resolve(model, "cache", theta=args.theta, size=args.size)
    parts = set(args.parts.split(","))
    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                               f"load {open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'}",
                    "memory": M.stored(model)}
    if "likelihood" in parts:
        report["likelihood"] = likelihood(model, args.corpus, tuned, args.dynamic_files, args.arrays)
    if "speed" in parts:
        report["speed"] = speed(model, args.corpus, tuned, args.speed_files, args.rounds,
                                [parse_setting(x) for x in args.settings or ()])
    if "generation" in parts:
        settings = ([parse_setting(x) for x in args.settings] if args.settings else
                    [replace(tuned, lam=lam) for lam in args.lambdas] if args.lambdas else
                    [M.composing(model, "cache")])  # what generate --memory cache composes with
        report["generation"] = generation(args.checkpoint, args.corpus, tuned, args.pieces, args.seconds,
                                          settings, args.skip_none, args.seed0)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
