"""Tune the memory's cache (theta, lambda, size) on valid pieces and store it in a checkpoint.

    classical-music tune-memory ../shared/data/classical-piano --recall motifs --json tune.json
    classical-music tune-memory ../shared/data/classical-piano --checkpoint models/mine --write

The model runs once per file (float32, the state carried across the file as `evaluate` does); its
log-probabilities and top-layer states give, for every (theta, size) of the grid, each event's
log p_cache, and lambda is then a cheap mix over those arrays. The files are split in two halves by
piece (a hash of the piece, so all performances of one piece land in one half): the parameters are
chosen on the first half (the `tune` half) and reported on the other (`held-out`) and on all.
--recall motifs tunes the motifs recall instead (key-downs only, memory.Motifs): lambda and size.
--write stores the chosen block in the checkpoint's config.json (`memory`), which `evaluate` and
`generate --memory cache` then use; `default` names the mode they use without --memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from . import memory as mem
from . import threads
from .errors import UserError

THETAS = (0.1, 0.2, 0.4, 0.8)
SIZES = (500, 2000, 4000)
LAMBDAS = (0.0, 0.003, 0.006, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3)
# the motifs recall proposes only where a figure returns, so it carries far more of the mixture
MOTIF_SIZES = (4000, 20000, 100000)
MOTIF_LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BLOCK = 256  # queries a block: its scores are BLOCK x (max size + BLOCK) floats
CHUNK = 2048


def half(piece: str) -> str:
    """'tune' or 'held-out', by a hash of the piece: stable across runs and machines."""
    return "tune" if hashlib.sha1(piece.encode()).digest()[0] % 2 == 0 else "held-out"


def _chunks(forward, x: torch.Tensor):
    """(float32 logits [t, V], targets [t], top-layer states [t, H]) of one file, chunk by chunk,
    the state carried as evaluate carries it."""
    state = None
    for s in range(0, x.shape[1] - 1, CHUNK):
        inp, tgt = x[:, s:s + CHUNK], x[:, s + 1:s + CHUNK + 1]
        logits, state, h = forward(inp[:, :tgt.shape[1]], state, None)
        yield logits[0].float(), tgt[0], h[0].float()


@torch.inference_mode()
def file_arrays(forward, tokens: np.ndarray, thetas=THETAS, sizes=SIZES, device="cpu"):
    """(log p_model [T], log p_cache [len(thetas), len(sizes), T]) of tokens[1:], nan where the
    cache is empty. One forward pass; the cache's scores are computed once per block of queries
    and re-weighted for every theta (exp once per theta, each size a masked sum)."""
    x = torch.as_tensor(np.asarray(tokens, np.int64), device=device).unsqueeze(0)
    lps, hs = [], []
    for logits, tgt, h in _chunks(forward, x):
        lps.append(-torch.nn.functional.cross_entropy(logits, tgt, reduction="none"))
        hs.append(h)
    lp, h = torch.cat(lps), torch.cat(hs)
    y = x[0, 1:]
    t, big = len(y), max(sizes)
    out = torch.full((len(thetas), len(sizes), t), math.nan)
    for q0 in range(0, t, BLOCK):
        q1 = min(t, q0 + BLOCK)
        lo = max(0, q0 - big)
        s = h[q0:q1] @ h[lo:q1].t()  # [b, k]
        d = torch.arange(q0, q1).unsqueeze(1) - torch.arange(lo, q1).unsqueeze(0)  # distance back
        hit = (y[lo:q1].unsqueeze(0) == y[q0:q1].unsqueeze(1)).float()
        masks = [((d >= 1) & (d <= n)).float() for n in sizes]
        top = s.masked_fill(d < 1, -math.inf).masked_fill(d > big, -math.inf).amax(1, keepdim=True)
        for a, theta in enumerate(thetas):
            e = torch.exp((s - top.clamp_min(-1e30)) * theta)
            for b, m in enumerate(masks):
                em = e * m
                total, match = em.sum(1), (em * hit).sum(1)
                v = torch.log(match) - torch.log(total)
                bad = (total == 0) | ~torch.isfinite(total)  # underflow: exactly, row by row
                if bad.any():
                    v[bad] = _exact(s[bad], m[bad], hit[bad], theta)
                out[a, b, q0:q1] = v
    return lp, out


@torch.inference_mode()
def motif_arrays(forward, tokens: np.ndarray, sizes, proposes: slice, device="cpu"):
    """As file_arrays for the motifs recall: (log p_model [T], log(share p_cache) [1, len(sizes), T]),
    share the model's key-down probability (memory.with_cache's mixture; nan: the model alone)."""
    x = torch.as_tensor(np.asarray(tokens, np.int64), device=device).unsqueeze(0)
    lps, shares = [], []
    for lf, tgt, _ in _chunks(forward, x):
        lps.append(-torch.nn.functional.cross_entropy(lf, tgt, reduction="none"))
        shares.append(torch.logsumexp(lf[:, proposes], -1) - torch.logsumexp(lf, -1))
    lp, share = torch.cat(lps), torch.cat(shares)
    y = x[0, 1:]
    out = torch.stack([mem.motif_logprob(y, None, n, 0, proposes)[0] + share for n in sizes]).unsqueeze(0)
    return lp, out


def _exact(s, m, hit, theta):
    z = (s * theta).masked_fill(m == 0, -math.inf)
    return torch.logsumexp(z.masked_fill(hit == 0, -math.inf), 1) - torch.logsumexp(z, 1)


def mixed_nats(lp: np.ndarray, lpc: np.ndarray, lam: float) -> float:
    """Total nats of the mixture over events (lpc nan: the model alone)."""
    if lam <= 0:
        return float(-lp.sum(dtype=np.float64))
    with np.errstate(invalid="ignore"):  # nan (an empty cache) is replaced below
        m = np.logaddexp(lp + math.log1p(-lam), lpc + math.log(lam))
    return float(-np.where(np.isnan(lpc), lp, m).sum(dtype=np.float64))


def grid(records, lambdas=LAMBDAS):
    """{(theta index, size index, lam): total nats} over the records' events."""
    lp = np.concatenate([r["lp"] for r in records])
    lpc = np.concatenate([r["lpc"] for r in records], axis=2)
    return {(a, b, lam): mixed_nats(lp, lpc[a, b], lam)
            for a in range(lpc.shape[0]) for b in range(lpc.shape[1]) for lam in lambdas}, len(lp), lp


def tune(model, files, pieces, progress=True, thetas=THETAS, sizes=SIZES, lambdas=LAMBDAS, arrays=None,
         recall: str = "states") -> dict:
    """Score files once, grid the cache, choose on the tune half; the report (and the records)."""
    from .evaluate import _read
    from .notes import MidiReadError
    from .scoring import make_forward

    from .evaluate import _bar

    forward = make_forward(model, "float32", "cpu", hidden=True)
    if recall == "motifs":
        proposes = mem.key_downs(model.tokenizer)
        if proposes is None:
            raise UserError("--recall motifs needs a tokenizer with key-down events")
        thetas = (mem.stored(model).get("theta", mem.DEFAULT_THETA),)  # unused by motifs; kept in the block
    records = []
    if arrays is not None:
        Path(arrays).mkdir(parents=True, exist_ok=True)
    bar = _bar(len(files), "file", "tune-memory", progress)
    for k, (path, piece) in enumerate(zip(files, pieces)):
        bar.update(1)
        try:
            tokens = _read(path, model.tokenizer)[0]
        except MidiReadError:
            continue
        lp, lpc = (motif_arrays(forward, tokens, sizes, proposes) if recall == "motifs"
                   else file_arrays(forward, tokens, thetas, sizes))
        records.append({"path": str(path), "half": half(piece), "lp": lp.numpy(), "lpc": lpc.numpy()})
        if arrays is not None:  # file by file, so a long run can be looked at (and re-mixed) as it goes
            np.savez(Path(arrays) / f"{k:05d}.npz", lp=records[-1]["lp"], lpc=records[-1]["lpc"],
                     thetas=thetas, sizes=sizes, meta=json.dumps({"path": str(path), "half": records[-1]["half"]}))
    return report(records, thetas, sizes, lambdas, recall)


def load_arrays(folder) -> list[dict]:
    """The records a run kept with --arrays (for report(), with other lambdas)."""
    out, seen = [], set()
    for f in sorted(Path(folder).glob("*.npz")):
        z = np.load(f)
        meta = json.loads(str(z["meta"]))
        if meta["path"] not in seen:  # a file kept twice (two runs over one folder) counts once
            seen.add(meta["path"])
            out.append({**meta, "lp": z["lp"], "lpc": z["lpc"], "thetas": z["thetas"], "sizes": z["sizes"]})
    return out


def report(records, thetas=THETAS, sizes=SIZES, lambdas=LAMBDAS, recall: str = "states") -> dict:
    parts = {name: [r for r in records if r["half"] == name] for name in ("tune", "held-out")}
    if not parts["tune"] or not parts["held-out"]:
        raise UserError("tune-memory needs files of at least two pieces, one in each half")
    parts["all"] = records
    scores, events, base = {}, {}, {}
    for name, recs in parts.items():
        scores[name], events[name], lp = grid(recs, lambdas)
        base[name] = float(-lp.sum(dtype=np.float64)) / events[name]
    best = min(scores["tune"], key=scores["tune"].get)
    a, b, lam = best
    chosen = mem.Memory("cache", theta=thetas[a], lam=lam, size=sizes[b],
                        **({"events": "notes", "recall": "motifs"} if recall == "motifs" else {}))
    by_size = {sizes[j]: min(v for (i, jj, l), v in scores["tune"].items() if jj == j) / events["tune"]
               for j in range(len(sizes))}
    return {
        "chosen": {"theta": chosen.theta, "lambda": chosen.lam, "size": chosen.size, "events": chosen.events,
                   "recall": chosen.recall},
        "files": {k: len(v) for k, v in parts.items()},
        "events": events,
        "none": {k: round(v, 5) for k, v in base.items()},
        "cache": {k: round(scores[k][best] / events[k], 5) for k in parts},
        "best_tune_by_size": {str(k): round(v, 5) for k, v in by_size.items()},
        "grid": {"thetas": list(thetas), "sizes": list(sizes), "lambdas": list(lambdas)},
    }


def write_block(folder: Path, block: dict) -> Path:
    """config.json's `memory` block replaced, atomically (the rest of the file kept as it was, and
    the old block's `compose` part unless the new one has its own)."""
    from .files import atomic_path

    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    old = config.get("memory")
    if isinstance(old, dict) and "compose" in old and "compose" not in block:
        block = {**block, "compose": old["compose"]}  # what composing was tuned on is kept
    config["memory"] = block
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("tune-memory", help="tune the memory's cache on valid pieces; store it in a checkpoint",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (default: the shipped model)")
    p.add_argument("--split", default=None,
                   help="a folder's metadata.csv split to tune on (default: valid where a folder has a metadata.csv, "
                        "else all its files)")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--arrays", type=Path, default=None, help="also keep the per-event arrays here, one .npz a file")
    p.add_argument("--recall", choices=mem.RECALLS, default="states",
                   help="tune the state cache (theta, lambda, size) or the motifs recall (lambda, size)")
    p.add_argument("--write", action="store_true", help="store the chosen block in the checkpoint's config.json")
    p.add_argument("--default", choices=mem.MODES, default=None,
                   help="with --write: the mode evaluate uses without --memory (default: the block's as it was; "
                        "none without one)")
    threads.add_argument(p)
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=_run)


def _pieces(paths, files) -> list[str]:
    from .evaluate import file_metadata

    meta = file_metadata(paths)
    return [str((meta.get(str(f)) or {}).get("piece") or f) for f in files]


def _run(args) -> int:
    from .checkpoint import checkpoint_folder
    from .evaluate import collect
    from .generate import load_model

    threads.apply(args.threads)
    split = args.split
    if split is None and any((Path(p) / "metadata.csv").is_file() for p in args.paths):
        split = "valid"  # a corpus: never tune on what the model trained on
    files = collect(args.paths, split)
    if not files:
        raise UserError("no MIDI files found in " + ", ".join(map(str, args.paths)))
    model = load_model(args.checkpoint, "cpu")
    progress = False if args.no_progress else True if sys.stderr.isatty() else "lines"
    grid_ = {"sizes": MOTIF_SIZES, "lambdas": MOTIF_LAMBDAS} if args.recall == "motifs" else {}
    r = tune(model, files, _pieces(args.paths, files), progress=progress, arrays=args.arrays, recall=args.recall, **grid_)
    if args.json:
        from .files import write_json

        write_json(args.json, r)
    c = r["chosen"]
    what = f"motifs, lambda {c['lambda']:g}" if c["recall"] == "motifs" else f"theta {c['theta']:g}, lambda {c['lambda']:g}"
    print(f"chosen on {r['files']['tune']} files: {what}, size {c['size']}; "
          + "; ".join(f"{k}: {r['none'][k]:.4f} -> {r['cache'][k]:.4f} nats/event" for k in ("tune", "held-out", "all")))
    if args.write:
        folder = checkpoint_folder(args.checkpoint) if args.checkpoint else _shipped()
        default = args.default or mem.stored(model).get("default", "none")
        block = mem.as_block(mem.Memory("cache", theta=c["theta"], lam=c["lambda"], size=c["size"], events=c["events"],
                                        recall=c["recall"]), default,
                             tuned_on={"files": r["files"]["tune"], "split": split},
                             valid_nats_per_event={"none": r["none"], "cache": r["cache"]})
        print(f"wrote the memory block into {write_block(folder, block)}")
    return 0


def _shipped() -> Path:
    from .generate.checkpoint import default_checkpoint

    return default_checkpoint()
