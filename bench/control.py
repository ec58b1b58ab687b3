"""Style control: does the model compose what it is asked for? (issue 12's six measurements)

    python bench/control.py [--checkpoint DIR] [--corpus ../shared/data/classical-piano] [--json out.json]

1. whole-file nats/event on the valid split with each file's metadata conditions vs all unknown
   (--ablate: also each of composer, period and kind alone)
2. density: 16 pieces of 30 s at 2, 4, 8 and 16 notes/s -> median achieved notes/s
3. key: 16 pieces in each of six keys -> Krumhansl-Schmuckler key of the output (exact / relative)
4. composer: 16 pieces per composer (guidance 1, 2 and 3; peer: unconditioned) -> mean overlap area
   (compare's features) with each composer's real valid pieces, and with all of them (realism);
   and a scikit-learn classifier trained on real training pieces (30-s excerpts: pitch, interval
   and timing histograms) applied to the generated ones
5. defaults: 64 pieces of 30 s at temperature 1.0 -> how many under 4 notes/s; OA vs real valid
   (peers: the same pieces with --release 0, and the real valid files' own openings)
6. generation speed with and without conditions (and with guidance), best of 5 interleaved rounds

Peers in the same run: the unconditioned model (each condition left at "any") for 2-4, and
real valid pieces for 3-4 (the key finder's and the classifier's own accuracy on real music).
Needs scikit-learn (`pip install scikit-learn`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from classical_music import conditions as C
from classical_music.compare import FEATURE_NAMES, piece_features
from classical_music.compare import overlap_area as oa_feature
from classical_music.data.sources import iter_folder
from classical_music.generate import condition_codes, load_model, sample
from classical_music.notes import MidiReadError, Notes, load_score, score_to_notes

SECONDS = 30.0
DENSITIES = (2, 4, 8, 16)
KEYS = ("C major", "G major", "D minor", "F# major", "Bb minor", "E major")


def corpus_files(corpus: Path):
    """(path, split, composer, period, kind) for every file of a folder with metadata.csv."""
    out = []
    for sf in iter_folder(corpus):
        st = C.file_conditions(sf.meta)
        out.append((sf.path, sf.split or "train", st["composer"], st["period"], st["kind"]))
    return out


def read_notes(path) -> Notes | None:
    try:
        return score_to_notes(load_score(path))
    except MidiReadError:
        return None


def compose(model, n, style, seed, guidance=1.0, temperature=1.0, steer=0.0, release=1.0) -> list[Notes]:
    tok = model.tokenizer
    cond, _ = condition_codes(model, style)
    rows = sample(model, tok, np.array([tok.bos_id]), num_samples=n, seconds=SECONDS, temperature=temperature,
                  seed=seed, cond=cond, guidance=guidance, steer=steer, release=release, steer_density=style.get("density"),
                  steer_key=C.parse_key(style["key"]) if "key" in style else None)
    return [first_seconds(tok.decode(r), SECONDS) for r in rows]


def first_seconds(notes: Notes, seconds: float) -> Notes:
    """The notes that start within the first `seconds`, cut off there."""
    keep = notes.onset < seconds
    return Notes(notes.onset[keep], np.minimum(notes.offset[keep], seconds), notes.pitch[keep], notes.velocity[keep])


def density(notes: Notes) -> float:
    return len(notes) / SECONDS


def pooled(pieces) -> dict[str, np.ndarray]:
    parts = [piece_features(p) for p in pieces]
    return {f: np.concatenate([q[f] for q in parts]) if parts else np.zeros(0) for f in FEATURE_NAMES}


def overlaps(a: dict, b: dict) -> dict[str, float]:
    return {f: oa_feature(a[f], b[f], f) for f in FEATURE_NAMES if len(a[f]) and len(b[f])}


def mean_oa(a: dict, b: dict) -> float:
    return float(np.mean(list(overlaps(a, b).values())))


# -- 1. likelihood ------------------------------------------------------------------------------


def likelihood(model, corpus: Path, precision: str, ablate: bool = False) -> dict:
    """evaluate's batched scorer, twice: each file under its own metadata conditions, then all unknown
    (with `ablate`, then once per condition alone)."""
    from classical_music.evaluate import collect, condition_rows, evaluate, file_metadata

    files = collect([corpus], split="valid")
    rows, labels = condition_rows(model, files, "metadata", {}, file_metadata([corpus]))
    meta = evaluate(model, files, progress=False, precision=precision, conditions=rows, condition_labels=labels)
    unknown = evaluate(model, files, progress=False, precision=precision)
    out = {"metadata": meta["nats_per_event"], "unknown": unknown["nats_per_event"], "events": meta["events"],
           "files": meta["files"], "precision": precision}
    if ablate:  # which condition moves it: each of composer, period and kind alone, the rest unknown
        names = list(model.config.conditions)
        out["alone"] = {}
        for name in ("composer", "period", "kind"):
            if name in names:
                k = names.index(name)
                alone = [np.where(np.arange(len(r)) == k, r, 0) for r in rows]
                out["alone"][name] = evaluate(model, files, progress=False, precision=precision,
                                              conditions=alone)["nats_per_event"]
    return out


# -- 4. composer classifier ---------------------------------------------------------------------


def excerpt_features(notes: Notes) -> np.ndarray:
    """Pitch-class, register, interval, inter-onset, duration, velocity histograms + density."""
    n = notes.sorted()
    if len(n) < 2:
        return np.zeros(12 + 8 + 25 + 10 + 10 + 8 + 2)
    pc = np.bincount(n.pitch % 12, minlength=12) / len(n)
    reg = np.histogram(n.pitch, bins=np.linspace(21, 109, 9))[0] / len(n)
    iv = np.histogram(np.clip(np.diff(n.pitch.astype(int)), -12, 12), bins=np.arange(-12.5, 13.5))[0] / (len(n) - 1)
    ioi = np.diff(n.onset)
    ioi = np.histogram(np.log10(np.clip(ioi[ioi > 0.01], 0.01, 4)), bins=np.linspace(-2, 0.61, 11))[0] / max(1, len(ioi))
    dur = np.histogram(np.log10(np.clip(n.offset - n.onset, 0.01, 8)), bins=np.linspace(-2, 0.91, 11))[0] / len(n)
    vel = np.histogram(n.velocity, bins=np.linspace(0, 128, 9))[0] / len(n)
    span = max(n.offset.max() - n.onset.min(), 1.0)
    return np.concatenate([pc, reg, iv, ioi, dur, vel, [len(n) / span / 20, float(np.mean(n.offset - n.onset))]])


def excerpts(notes: Notes, seconds=SECONDS, limit=40):
    out, t = [], float(notes.onset.min()) if len(notes) else 0.0
    end = float(notes.offset.max()) if len(notes) else 0.0
    while t + seconds <= end + 1e-9 and len(out) < limit:
        keep = (notes.onset >= t) & (notes.onset < t + seconds)
        if keep.sum() >= 8:
            out.append(Notes(notes.onset[keep] - t, notes.offset[keep] - t, notes.pitch[keep], notes.velocity[keep]))
        t += seconds
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="default: the model shipped in the package")
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "classical-piano")
    ap.add_argument("--pieces", type=int, default=16)
    ap.add_argument("--guidance", type=float, nargs="*", default=[1.0, 2.0], help="of goals 2-3's model-alone rows")
    ap.add_argument("--composer_guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0],
                    help="goal 4 at each; the JSON's composer_oa and the classifier use the last")
    ap.add_argument("--skip_likelihood", action="store_true")
    ap.add_argument("--ablate", action="store_true",
                    help="goal 1 also with each of composer, period and kind alone (three more passes over valid)")
    ap.add_argument("--precision", default="float32", choices=("float32", "int8"), help="of the likelihood scoring")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.checkpoint)
    vocab = model.config.conditions
    if not vocab:
        sys.exit("this checkpoint has no style conditions")
    files = corpus_files(args.corpus)
    valid = [f for f in files if f[1] == "valid"]
    report: dict = {"checkpoint": args.checkpoint or "shipped", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "torch": torch.__version__}
    t0 = time.perf_counter()

    # 1
    if not args.skip_likelihood:
        report["likelihood"] = likelihood(model, args.corpus, args.precision, args.ablate)
        print(f"1. valid whole files: metadata conditions {report['likelihood']['metadata']:.4f}, "
              f"all unknown {report['likelihood']['unknown']:.4f} nats/event"
              f"{''.join(f', {k} alone {v:.4f}' for k, v in report['likelihood'].get('alone', {}).items())}", flush=True)

    n = args.pieces
    results: dict = {}
    for g, steer in [(g, 0.0) for g in args.guidance] + [(1.0, 1.0)]:
        r: dict = {"guidance": g, "steer": steer}
        # 2
        r["density"] = {}
        for d in DENSITIES:
            got = [density(p) for p in compose(model, n, {"density": d}, seed=100 + d, guidance=g, steer=steer)]
            r["density"][str(d)] = {"median": round(float(np.median(got)), 2), "min": round(min(got), 2),
                                    "max": round(max(got), 2)}
        # 3
        r["key"] = {}
        for k in KEYS:
            want = C.parse_key(k)
            est = [C.estimate_key(p.pitch, C.note_durations(p))
                   for p in compose(model, n, {"key": k}, seed=7, guidance=g, steer=steer)]
            r["key"][k] = {"exact": sum(e == want for e in est) / n,
                           "with_relative": sum(e in (want, C.relative_key(want)) for e in est) / n}
        r["key_exact"] = round(float(np.mean([v["exact"] for v in r["key"].values()])), 3)
        r["key_with_relative"] = round(float(np.mean([v["with_relative"] for v in r["key"].values()])), 3)
        results[f"guidance {g}, steer {steer}"] = r
        print(f"guidance {g}, steer {steer}: density {r['density']}; key exact {r['key_exact']:.2f}, "
              f"with relative {r['key_with_relative']:.2f}", flush=True)

    # 2-3 peers: the same model with nothing asked
    free = compose(model, 4 * n, {}, seed=3)
    report["unconditioned"] = {"density_median": round(float(np.median([density(p) for p in free])), 2)}

    # 4
    composers = [c for c in vocab.get("composer", []) if c not in (C.ANY, C.OTHER)]
    real_valid = {c: [x for x in (read_notes(f[0]) for f in valid if f[2] == c) if x is not None and len(x)] for c in composers}
    judged = [c for c in composers if real_valid[c]]
    real_feats = {c: pooled(real_valid[c]) for c in judged}
    all_valid = [x for x in (read_notes(f[0]) for f in valid) if x is not None and len(x)]
    real = pooled(all_valid)
    by_guidance = {}
    # "unconditioned" is the peer: nothing asked, a fresh seed per composer's slot (chance level).
    # Besides the wins, likeness (own composer's OA) and others (the other composers') tell apart
    # pieces closer to X from pieces only further from the rest; realism is OA with all valid music.
    for g in ["unconditioned", *args.composer_guidance]:
        if g == "unconditioned":
            gen = {c: compose(model, n, {}, seed=11 + i) for i, c in enumerate(composers)}
        else:
            gen = {c: compose(model, n, {"composer": c}, seed=11, guidance=g) for c in composers}
        gen_feats = {c: pooled(gen[c]) for c in judged}
        pairs = wins = 0
        table = {}
        for x in judged:
            table[x] = {y: round(mean_oa(gen_feats[x], real_feats[y]), 4) for y in judged}
            for y in judged:
                if y != x:
                    pairs += 1
                    wins += table[x][x] > table[x][y]
        by_guidance[str(g)] = {
            "pairs": pairs, "wins": wins, "share": round(wins / max(pairs, 1), 3),
            "likeness": round(float(np.mean([table[x][x] for x in judged])), 4),
            "others": round(float(np.mean([table[x][y] for x in judged for y in judged if y != x])), 4),
            "realism": round(float(np.mean([mean_oa(gen_feats[x], real) for x in judged])), 4)}
        print(f"4. composer OA, {'guidance ' if g != 'unconditioned' else ''}{g}: own > other in {wins}/{pairs} pairs; "
              f"{by_guidance[str(g)]}", flush=True)
    report["composer_oa"] = {"judged": judged, "no_valid_pieces": [c for c in composers if c not in judged],
                             "guidance": g, "oa": table, "pairs": pairs, "wins": wins,
                             "share": round(wins / max(pairs, 1), 3), "by_guidance": by_guidance}
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = [], []
        for f in files:
            if f[1] == "train" and f[2] in composers:
                notes = read_notes(f[0])
                for e in excerpts(notes) if notes is not None and len(notes) else []:
                    X.append(excerpt_features(e))
                    y.append(f[2])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5))
        clf.fit(np.array(X), np.array(y))
        Xv, yv = [], []
        for c in judged:
            for p in real_valid[c]:
                for e in excerpts(p, limit=4):
                    Xv.append(excerpt_features(e))
                    yv.append(c)
        Xg = np.array([excerpt_features(p) for c in composers for p in gen[c]])
        yg = np.array([c for c in composers for _ in gen[c]])
        uncond = np.array([excerpt_features(p) for p in free])
        report["composer_classifier"] = {
            "classes": len(composers), "chance": round(1 / len(composers), 3), "train_excerpts": len(X),
            "real_valid_accuracy": round(float((clf.predict(np.array(Xv)) == np.array(yv)).mean()), 3),
            "generated_accuracy": round(float((clf.predict(Xg) == yg).mean()), 3),
            "per_composer": {c: round(float((clf.predict(Xg[yg == c]) == c).mean()), 3) for c in composers},
            # the peer: unconditioned pieces, scored against the label each composer's pieces had
            "unconditioned_accuracy": round(float(np.mean([(clf.predict(uncond) == c).mean() for c in composers])), 3),
        }
        cc = report["composer_classifier"]
        print(f"   classifier: generated {cc['generated_accuracy']:.2f}, real valid {cc['real_valid_accuracy']:.2f}, "
              f"unconditioned {cc['unconditioned_accuracy']:.2f}, chance {cc['chance']:.2f}", flush=True)
    except ImportError:
        report["composer_classifier"] = "scikit-learn not installed"

    # 5
    for name, release in (("defaults", 1.0), ("defaults_release_0", 0.0)):
        pieces = compose(model, 64, {}, seed=1, temperature=1.0, release=release)
        oa = overlaps(pooled(pieces), real)  # each feature's KDEs once, for the mean and the table
        report[name] = {"pieces": 64, "under_4_notes_per_second": sum(density(p) < 4 for p in pieces),
                        "median_density": round(float(np.median([density(p) for p in pieces])), 2),
                        "mean_overlap_area": round(float(np.mean(list(oa.values()))), 4),
                        "overlap_area": {f: round(v, 3) for f, v in oa.items()}}
        print(f"5. {name}: {report[name]}", flush=True)
    # what real music does in its first 30 s (valid files are whole pieces, like the generated ones)
    openings = [float((x.onset < x.onset.min() + SECONDS).sum()) / SECONDS for x in all_valid]
    report["real_valid_openings"] = {"files": len(openings), "under_4_notes_per_second": sum(d < 4 for d in openings),
                                     "median_density": round(float(np.median(openings)), 2)}
    print(f"   real valid openings: {report['real_valid_openings']}", flush=True)

    # 6
    tok = model.tokenizer
    speed = {}
    # Interleaved rounds: a shared machine's speed drifts by a third within a minute (measured),
    # which a block of tries per label would read as a cost of the conditions.
    for _ in range(5):
        for label, style, g in (("none", {}, 1.0), ("conditioned", {"composer": composers[0], "density": 8, "key": "C"}, 1.0),
                                ("guidance 2", {"composer": composers[0], "density": 8, "key": "C"}, 2.0)):
            cond, _ = condition_codes(model, style)
            t = time.perf_counter()
            rows = sample(model, tok, np.array([tok.bos_id]), events=1000, seed=0, cond=cond if style else None,
                          guidance=g, min_seconds=1e9)
            speed[label] = max(speed.get(label, 0), round(sum(map(len, rows)) / (time.perf_counter() - t)))
    report["speed_events_per_second"] = speed
    print(f"6. speed (batch 1, best of 5 interleaved rounds): {speed}", flush=True)
    report["results"] = results
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
