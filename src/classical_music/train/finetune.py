"""Teach a trained model your own MIDI on a laptop's CPU, in minutes.

    classical-music finetune my-midi/ --out models/mine [--minutes 10] [--composer NAME]
    python train.py --finetune my-midi/ --out models/mine

Prepares the folder (any MIDI folder, with or without a metadata.csv, or an Aria-MIDI subset),
holds out a fifth of its pieces (by piece; or the folder's own split), scores the shipped model on
them, fine-tunes it with a CPU recipe until the time budget runs out or the held-out score stops
improving, keeps the best weights, and says what changed:

    held-out nats/event: shipped 2.31 → yours 2.12 (−0.19) on 9 pieces; valid of the shipped corpus 2.03 → 2.05

OUT is an ordinary checkpoint folder (config.json, model.safetensors, tokenizer.json) with a
MODEL_CARD.md and learning_curve.png beside it. Ctrl-C or SIGTERM stops and keeps the best so far.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import conditions
from .. import threads as cpu_threads
from ..errors import UserError
from ..locks import folder_lock
from . import adapt as recipes
from . import finetune_data as fd
from . import rehearse as rehearsal
from .finetune_card import learning_curve_png, model_card, summary_line
from .finetune_check import hold_forgetting, int8_scoring, nats_per_event

CHECKS = 8  # held-out checks over the budget, besides the starting model's


class Cancelled(UserError):
    """finetune(stop=...) was asked to stop: nothing is saved (the studio's Cancel)."""
PATIENCE = 3  # checks without a better held-out score before stopping
WARMUP_STEPS = 10
MIN_LR_RATIO = 0.1  # cosine over the budget's time, down to lr times this


@dataclass
class FinetuneConfig:
    folder: str
    out: str
    minutes: float = 10.0
    composer: str | None = None
    init_from: str = "default"
    recipe: str = recipes.DEFAULT_RECIPE
    lr: float = 0.0  # 0 = the recipe's
    seq_len: int = 256
    batch_size: int = 16
    seed: int = 1337
    max_steps: int = 0  # 0 = the time budget alone decides
    threads: int | None = None
    reference: str | None = None  # the shipped corpus (default: ../shared/data/classical-piano)
    cache: str | None = None  # keep the prepared folder here (default: a temporary folder)
    overwrite: bool = False
    no_progress: bool = False
    rehearse: float = rehearsal.WEIGHT  # the rehearsal loss's weight (train/rehearse.py; 0: off)
    uploaded: int | None = None  # the studio's upload of this many files (the card says so, not its folder)

    def validate(self) -> None:
        if not (math.isfinite(self.minutes) and 0 < self.minutes <= 24 * 60):
            raise UserError(f"--minutes must be more than 0 and at most 1440, got {self.minutes}")
        if self.max_steps < 0:
            raise UserError(f"--max_steps must not be negative, got {self.max_steps}")
        for name in ("seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.lr < 0:
            raise UserError(f"--lr must not be negative, got {self.lr}")
        if not (math.isfinite(self.rehearse) and self.rehearse >= 0):
            raise UserError(f"--rehearse must be 0 or more, got {self.rehearse}")
        if self.recipe not in recipes.RECIPES:
            raise UserError(f"--recipe must be one of {', '.join(recipes.RECIPES)}, got {self.recipe!r}")


def check_out(out: Path, folder: Path, overwrite: bool) -> None:
    """--out may replace the model fine-tuned from this same folder, nothing else unless --overwrite."""
    if overwrite or not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file: choose a folder")
    if not any(out.iterdir()):
        return
    made = fd.read_json(out / "config.json").get("finetune", {})
    if made.get("folder") == fd.folder_identity(folder):
        return
    what = f"a model fine-tuned on {made['folder']}" if made.get("folder") else "something else"
    raise UserError(f"--out {out} already holds {what}: add --overwrite to replace it, or choose another --out")


def finetune(cfg: FinetuneConfig, log=print, progress=None, stop=None) -> dict:
    """progress(fraction of the time budget) after each step; stop: a threading.Event whose set
    cancels the run (Cancelled) at the next step or stage, saving nothing."""
    from ..generate import load_model

    cfg.validate()
    folder, out = Path(cfg.folder), Path(cfg.out)
    if not folder.is_dir():
        raise UserError(f"no such folder: {folder}" if not folder.exists() else f"{folder} is not a folder")
    try:  # models/ is made as generate makes its output's folder (issue 27 item 15)
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write --out {out}: {e.strerror or e}") from None
    # One run per --out: the lock lives in a working folder beside it (OUT itself is swapped in
    # whole at the end), which also holds the prepared folder unless --cache keeps it elsewhere.
    with folder_lock(out.parent / f".{out.name}.finetune", "finetune") as lock:
        check_out(out, folder, cfg.overwrite)
        threads = cpu_threads.apply(cfg.threads)
        torch.manual_seed(cfg.seed)
        base = load_model(None if cfg.init_from == "default" else cfg.init_from).float()
        base_name = "shipped" if cfg.init_from == "default" else "base"
        composer_key, vocab = _vocabulary(base, cfg.composer)
        cache_dir = Path(cfg.cache) if cfg.cache else Path(tempfile.mkdtemp(prefix="cache-", dir=lock.parent))
        try:
            data = fd.prepare_folder(folder, cache_dir, base.tokenizer, progress=not cfg.no_progress)
            return _run(cfg, base, base_name, composer_key, vocab, data, threads, log, progress, stop)
        finally:
            if not cfg.cache:
                shutil.rmtree(cache_dir, ignore_errors=True)


def composer_key(composer: str) -> str:
    """The vocabulary key a --composer name is taught as, or UserError (the studio checks it too)."""
    key = conditions.normalize_composer(composer)
    if key is None or key in (conditions.ANY, conditions.OTHER):
        raise UserError(f"--composer {composer!r}: give the composer's name, e.g. --composer chopin")
    if len(key) > 64:
        raise UserError(f"--composer {composer!r}: at most 64 characters")
    return key


def _vocabulary(base, composer: str | None) -> tuple[str | None, dict]:
    """The composer key to teach and the vocabularies the fine-tuned model has (grown by a new name)."""
    vocab = {k: list(v) for k, v in base.config.conditions.items()}
    if composer is None:
        return None, vocab
    if "composer" not in vocab:
        have = ", ".join(vocab) or "none"
        raise UserError(f"--composer: this checkpoint has no composer condition (it knows: {have}); "
                        "fine-tune it without --composer")
    key = composer_key(composer)
    if key not in vocab["composer"]:
        vocab["composer"].append(key)
    return key, vocab


def _grown(base, vocab: dict, composer_key: str | None):
    """The base model with these vocabularies: a new composer starts as the base model's `other`."""
    from .checkpoints import with_conditions

    if vocab == base.config.conditions:
        return base
    model = with_conditions(base, vocab)
    model.checkpoint_config = getattr(base, "checkpoint_config", {})
    if composer_key is not None and conditions.OTHER in vocab["composer"]:
        new, other = vocab["composer"].index(composer_key), vocab["composer"].index(conditions.OTHER)
        with torch.no_grad():
            for part in (model.cond_embed, model.cond_bias):
                if "composer" in part:
                    part["composer"].weight[new] = part["composer"].weight[other]
    return model


def _run(cfg, base, base_name, composer_key, vocab, data, threads, log, progress=None, stop=None) -> dict:
    from ..data.cache import SPLITS
    from ..data.dataset import AugmentConfig, WindowDataset
    from .session import StopOnSignal

    def check_stop():
        if stop is not None and stop.is_set():
            raise Cancelled("cancelled: nothing was saved")

    check_stop()

    cache = data.cache
    # This run's split (held out by piece) replaces the cache's, in memory only.
    cache.split = np.full(len(cache.length), SPLITS.index("test"), np.int8)
    cache.split[data.train] = SPLITS.index("train")
    if composer_key is not None and "composer" in cache.styles:
        cache.styles["composer"] = np.full(len(cache.length), composer_key, dtype="<U64")
        period = conditions.COMPOSERS.get(composer_key, (None, None))[1]
        if period and "period" in cache.styles:
            cache.styles["period"] = np.where(cache.styles["period"] == "", period, cache.styles["period"])
    model = _grown(base, vocab, composer_key)
    model.tokenizer = base.tokenizer
    # Conditions the folder has no value for (a plain folder has no composer) stay "any".
    have = [n for n in model.config.conditions if n in cache.available_conditions()]
    ds = WindowDataset(cache, "train", cfg.seq_len, augment=AugmentConfig(transpose=3, stretch=0.03, velocity=1),
                       seed=cfg.seed, conditions={n: model.config.conditions[n] for n in have}, cond_dropout=0.5)
    columns = [list(model.config.conditions).index(n) for n in have]
    if len(ds) == 0:
        raise UserError(f"{cfg.folder}: nothing to learn from after holding out {data.pieces} piece(s)")

    check_items = fd.cache_items(cache, data.held_out, fd.CHECK_EVENTS)
    report_items = fd.cache_items(cache, data.held_out, fd.REPORT_EVENTS)
    same_sets = sum(len(i.tokens) for i in check_items) == sum(len(i.tokens) for i in report_items)
    ref_items, ref_what = fd.reference_items(fd.folder_files(Path(cfg.folder)), model.tokenizer, cfg.reference)
    log(f"{cfg.folder}: {len(data.train)} files ({data.train_pieces} pieces, {data.train_hours:.2f} h) to learn from, "
        f"{len(data.held_out)} files ({data.pieces} pieces) held out"
        + (" (the folder's own split)" if data.own_split else "") + f"; {len(data.skipped)} skipped")
    known = fd.trained_on(base)
    mine = {i: fd.digest(Path(cfg.folder) / data.keys[i]) for i in map(int, np.concatenate([data.train, data.held_out]))}
    seen = sum(d in known for d in mine.values())
    if seen:
        log(f"note: {seen} of the folder's {len(mine)} files are music the {base_name} model learned from: "
            "it has little to learn there, and the held-out gain says little")

    check_stop()
    t0 = time.perf_counter()
    shipped_check = nats_per_event(model, check_items)
    shipped_report = shipped_check if same_sets else nats_per_event(model, report_items)
    shipped_ref = nats_per_event(model, ref_items) if ref_items else None
    own_items, own_what = ([], "") if ref_items else fd.own_music_items(base)
    shipped_own = nats_per_event(model, own_items) if own_items else None
    log(f"{base_name} model on the held-out pieces: {shipped_report:.4f} nats/event"
        + (f"; on the shipped corpus's valid split: {shipped_ref:.4f}" if shipped_ref is not None else "")
        + (f"; on its own music: {shipped_own:.4f}" if shipped_own is not None else "")
        + f" ({time.perf_counter() - t0:.0f} s)")

    check_stop()
    rehearse = rehearsal.Rehearsal(model, cfg.seq_len, cfg.rehearse) if cfg.rehearse > 0 else None
    rehearse_n = rehearsal.windows_per_step(cfg.batch_size)
    rehearse_gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    ad = recipes.adapt(model, cfg.recipe, cfg.lr or None, cfg.seed)
    opt = torch.optim.AdamW(ad.groups, lr=ad.lr, betas=(0.9, 0.99), weight_decay=0.0)

    budget = cfg.minutes * 60
    check_every = budget / CHECKS
    curve = [{"minutes": 0.0, "step": 0, "held_out": round(shipped_check, 5), "train_loss": None}]
    # the starting weights are the best until a check beats them (and are what is saved if none does)
    start_weights = ad.weights()  # what a change that forgets too much is blended back towards
    best = {"held_out": shipped_check, "step": 0, "weights": start_weights}
    steps = tokens = bad = 0
    losses: list[float] = []
    stop_reason = "time budget"
    from tqdm import tqdm

    bar = tqdm(total=round(budget), unit="s", desc="finetune", disable=cfg.no_progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
    start = last_check = time.perf_counter()
    epoch = 0
    interrupted = False
    try:
        with StopOnSignal() as signal:
            # said once the handler is in place: a signal from here on keeps the best so far
            log(f"recipe {cfg.recipe}: {ad.trainable():,} of {model.num_parameters():,} parameters learn at {ad.lr:g}; "
                f"{cfg.minutes:g} min on {threads} thread(s)")
            while stop_reason == "time budget" and not interrupted and not (cfg.max_steps and steps >= cfg.max_steps):
                ds.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0,
                                                     generator=torch.Generator().manual_seed(cfg.seed + epoch))
                for batch in loader:
                    x, y = batch[0], batch[1]
                    c = _columns(batch[2], columns, len(model.config.conditions)) if len(batch) > 2 else None
                    frac = min(1.0, (time.perf_counter() - start) / budget)
                    warm = min(1.0, (steps + 1) / WARMUP_STEPS)
                    lr = ad.lr * warm * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * frac)))
                    for g in opt.param_groups:
                        g["lr"] = lr * g["lr_scale"]
                    logits, _ = ad.forward(x, c)
                    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=model.tokenizer.pad_id)
                    opt.zero_grad(set_to_none=True)
                    # (an empty rehearsal, or none, is falsy: the folder's loss alone)
                    (loss + rehearse.loss(ad, rehearse_n, rehearse_gen) if rehearse else loss).backward()
                    torch.nn.utils.clip_grad_norm_([p for g in ad.groups for p in g["params"]], 1.0)
                    opt.step()
                    steps += 1
                    tokens += int((y != model.tokenizer.pad_id).sum())
                    losses.append(float(loss.detach()))
                    now = time.perf_counter()
                    bar.n = min(round(now - start), bar.total)
                    bar.refresh()
                    if progress is not None:
                        progress(min(1.0, (now - start) / budget))
                    check_stop()
                    if signal.signum is not None:
                        interrupted, stop_reason = True, "interrupted (Ctrl-C or SIGTERM): kept the best so far"
                        break
                    out_of_time = now - start >= budget or (cfg.max_steps and steps >= cfg.max_steps)
                    if now - last_check >= check_every or out_of_time:
                        model.eval()
                        val = nats_per_event(model, check_items, ad)
                        model.train()
                        last_check = time.perf_counter()
                        curve.append({"minutes": round((now - start) / 60, 3), "step": steps,
                                      "held_out": round(val, 5), "train_loss": round(float(np.mean(losses)), 5)})
                        losses = []
                        if val < best["held_out"] - 1e-4:
                            best, bad = {"held_out": val, "step": steps, "weights": ad.weights()}, 0
                        else:
                            bad += 1
                        bar.set_postfix_str(f"held-out {val:.3f}, best {best['held_out']:.3f}", refresh=True)
                        if bar.disable:  # a log or a pipe: a line per check instead of the bar
                            print(f"finetune: {(now - start) / 60:.1f} of {cfg.minutes:g} min, step {steps}: held-out "
                                  f"check {val:.4f} (best {best['held_out']:.4f})", file=sys.stderr, flush=True)
                        if bad >= PATIENCE:
                            stop_reason = f"held-out score stopped improving ({PATIENCE} checks)"
                            break
                    if out_of_time:
                        stop_reason = "time budget" if now - start >= budget else "max steps"
                        break
                else:
                    epoch += 1
                    continue
                break
    finally:
        bar.close()
    trained = time.perf_counter() - start
    model.load_state_dict(best["weights"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    kept = best["step"] > 0
    share, yours_ref, yours_own = 1.0, None, shipped_own
    # interrupted too: what Ctrl-C keeps must not forget more than a finished run may (~5-25 s)
    if kept and (ref_items or own_items):
        guard = ("the shipped corpus's valid", ref_items, shipped_ref) if ref_items else (
            f"the {base_name} model's own music", own_items, shipped_own)
        share, got = hold_forgetting(model, start_weights, best["weights"], *guard, log)
        yours_ref, yours_own = (got, None) if ref_items else (None, got)
        kept = share > 0
    if interrupted:
        if not kept:
            yours_report = shipped_check
        else:
            yours_report = best["held_out"] if share == 1 else nats_per_event(model, check_items)
        shipped_report_shown, what = shipped_check, f"{sum(len(i.tokens) - 1 for i in check_items):,} events (check subset)"
        ref_shown = ({"shipped": shipped_ref, "yours": yours_ref, "what": ref_what} if yours_ref is not None
                     else {"shipped": None, "yours": None, "what": "not measured (interrupted)"})
    else:
        yours_report = best["held_out"] if same_sets and share == 1 else nats_per_event(model, report_items)
        if kept and yours_report >= shipped_report:
            # the check subset's best did not carry to all the held-out pieces: nothing was learned
            model.load_state_dict(start_weights)
            kept, share = False, 1.0
            log(f"the best check's weights score no better on all the held-out pieces ({yours_report:.4f} against "
                f"{shipped_report:.4f}): keeping the {base_name} model's weights unchanged")
        if not kept:
            yours_report, yours_ref, yours_own = shipped_report, shipped_ref, shipped_own
        shipped_report_shown, what = shipped_report, f"{sum(len(i.tokens) - 1 for i in report_items):,} events"
        ref_shown = {"shipped": shipped_ref, "yours": yours_ref, "what": ref_what}
    if best["step"] == 0:
        log(f"no check beat the {base_name} model's held-out score: keeping its weights unchanged")
    result = {
        "name": Path(cfg.out).name, "folder": cfg.folder, "folder_name": Path(cfg.folder).resolve().name,
        "uploaded": cfg.uploaded,
        "base": cfg.init_from, "base_name": base_name,
        "base_license": (getattr(base, "checkpoint_config", None) or {}).get("license"),
        "recipe": cfg.recipe, "lr": ad.lr,
        "composer": composer_key, "composer_new": composer_key is not None and composer_key not in base.config.conditions.get("composer", []),
        "trainable": ad.trainable(), "parameters": model.num_parameters(), "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size, "rehearse": cfg.rehearse, "steps": steps, "best_step": best["step"], "kept_share": share,
        "train_tokens": tokens,
        "minutes": trained / 60, "budget_minutes": cfg.minutes, "stop_reason": stop_reason,
        "hardware": f"{_cpu()}, {threads} thread(s)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "held_out": {"shipped": shipped_report_shown, "yours": yours_report, "pieces": data.pieces,
                     "files": len(data.held_out), "what": what + (", int8" if int8_scoring() else ", float32")},
        "reference": ref_shown,
        "own_music": None if shipped_own is None else
        {"shipped": shipped_own, "yours": yours_own if kept else shipped_own, "what": own_what},
        "data": {"train_files": len(data.train), "train_pieces": data.train_pieces, "train_hours": data.train_hours,
                 "train_events": data.train_events, "held_out_files": len(data.held_out), "own_split": data.own_split,
                 "skipped": len(data.skipped), "held_out": [data.keys[i] for i in data.held_out],
                 "already_learned": seen},
        "curve": curve,
    }
    learned = known | {mine[i] for i in map(int, data.train)}  # what the new model has learned from
    check_stop()  # a cancel during the last scoring still saves nothing
    _save(model, cfg, result, vocab, cache, fd.opening_blocks(data, model.tokenizer, Path(cfg.folder)), learned)
    log(summary_line(result))
    log(f"saved {cfg.out} (compose with: classical-music generate --checkpoint {cfg.out}"
        + (f" --composer {composer_key}" if composer_key else "") + ")")
    result["interrupted"] = interrupted
    return result


def _columns(c: torch.Tensor, columns: list[int], n: int) -> torch.Tensor:
    """The dataset's condition columns placed among the model's (the rest stay 0, "any")."""
    if len(columns) == n:
        return c
    full = torch.zeros(*c.shape[:-1], n, dtype=c.dtype)
    full[..., columns] = c
    return full


def _cpu() -> str:
    from .devices import _cpu_name

    return _cpu_name()


def _save(model, cfg, result: dict, vocab: dict, cache, opening: dict | None = None,
          learned: set | None = None) -> None:
    """opening: fd.opening_blocks' config.json blocks (your pieces' opening densities and keys)."""
    import json

    hours = {}
    old = getattr(model, "checkpoint_config", None) or {}
    try:
        hours = {k: dict(v) for k, v in (old.get("condition_hours") or {}).items()}
    except AttributeError:
        hours = {}
    if result["composer"] and "composer" in vocab:
        h = hours.setdefault("composer", {})
        h[result["composer"]] = round(h.get(result["composer"], 0.0) + result["data"]["train_hours"], 3)
    info = {k: v for k, v in result.items() if k not in ("curve",)}
    extra = {"finetune": {**info, "folder": fd.folder_identity(Path(cfg.folder)), "config": asdict(cfg)},
             "condition_hours": hours,
             "composer_min_hours": old.get("composer_min_hours", conditions.COMPOSER_MIN_HOURS)}
    # pieces draw their density (planned ones) and home key (any asked for none) from your pieces' openings
    extra.update(opening or {})
    if conditions.HOME_KEYS_KEY in extra:
        result = {**result, "home_keys": extra[conditions.HOME_KEYS_KEY]["counts"]}  # for the card
    if old.get("license"):
        # the weights derive from the base model's, so its terms (from its training data) travel with them
        extra["license"] = str(old["license"])
    if old.get("training_data"):
        extra["training_data"] = (f"{old['training_data']}; then fine-tuned on {result['folder_name']} "
                                  f"({result['data']['train_files']} files)")
    if isinstance(old.get("memory"), dict):
        # the base model's tuned memory of the piece carries over (evaluate and generate read it), so
        # yours is scored and composes as the base model does; `tune-memory` retunes it for yours
        extra["memory"] = {**old["memory"], "inherited_from": result["base_name"]}
    files = {"MODEL_CARD.md": model_card(result).encode("utf-8"), "learning_curve.png": learning_curve_png(result),
             "finetune.json": (json.dumps(result, indent=1, default=float) + "\n").encode("utf-8")}
    if learned:
        from ..checkpoint import TRAINED_ON_NAME

        files[TRAINED_ON_NAME] = fd.trained_on_text(learned)
    model.save_pretrained(cfg.out, model.tokenizer, extra=extra, extra_files=files)


# -- the command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER", help="a folder of MIDI files (a metadata.csv or Aria-MIDI layout in it "
                   "adds composers and a split)")
    p.add_argument("--out", required=True, help="the checkpoint folder to write, e.g. models/mine")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget for training (default: 10)")
    p.add_argument("--composer", default=None,
                   help="the composer of every piece in the folder; a name the model does not know is added to it")
    p.add_argument("--init_from", default="default", metavar="CHECKPOINT",
                   help="the model to start from (default: the shipped model)")
    p.add_argument("--recipe", choices=recipes.RECIPES, default=recipes.DEFAULT_RECIPE,
                   help=f"what learns: full (every weight, small rate), top (last LSTM layer and output), "
                        f"lora (low-rank adapters, merged at save); default {recipes.DEFAULT_RECIPE}, "
                        "chosen by measurement (docs/benchmarks.md)")
    p.add_argument("--lr", type=float, default=0.0, help="learning rate (default: the recipe's)")
    p.add_argument("--batch_size", type=int, default=16, help="windows per step (default: 16)")
    p.add_argument("--seq_len", type=int, default=256, help="events per window (default: 256)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--rehearse", type=float, default=rehearsal.WEIGHT, metavar="W",
                   help="weight of the rehearsal of the starting model's own music, which keeps it from forgetting "
                        f"what you did not ask to change (default: {rehearsal.WEIGHT:g}; 0: off)")
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (default 0: the budget decides)")
    cpu_threads.add_argument(p)
    p.add_argument("--reference", default=None, metavar="DIR",
                   help=f"the shipped corpus, whose valid split checks what was forgotten (default: {fd.REFERENCE})")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the prepared folder here and reuse it next time (default: a temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="replace whatever --out holds")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="teach the shipped model your own MIDI folder in minutes on a CPU",
                              description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def config_from_args(args) -> FinetuneConfig:
    return FinetuneConfig(folder=args.folder, out=args.out, minutes=args.minutes, composer=args.composer,
                          init_from=args.init_from, recipe=args.recipe, lr=args.lr, seq_len=args.seq_len,
                          batch_size=args.batch_size, seed=args.seed, max_steps=args.max_steps, threads=args.threads,
                          reference=args.reference, cache=args.cache, rehearse=args.rehearse, overwrite=args.overwrite,
                          no_progress=args.no_progress or not sys.stderr.isatty())


def run(args) -> int:
    result = finetune(config_from_args(args))
    return 130 if result["interrupted"] else 0


def main(argv: list[str]) -> int:
    """`python train.py --finetune FOLDER ...`: the same command."""
    from ..cli import Parser, run as run_stage

    p = Parser(prog="train.py --finetune", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add_arguments(p)
    return run_stage(run, p.parse_args(argv))
