"""Train the composer LSTM on a prepared token cache.

One process (CPU, one GPU or Apple MPS):

    classical-music train --data data/prepared --save_dir checkpoints
    python train.py --data data/prepared --epochs 20 --batch_size 32      # same, from the repo root

Several GPUs on one machine (DistributedDataParallel, one process per GPU):

    torchrun --standalone --nproc_per_node=4 train.py --data data/prepared

Several machines (run on each; node_rank 0 on the master, whose address all can reach):

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
        --master_addr=10.0.0.1 --master_port=29500 train.py --data data/prepared
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 \\
        --master_addr=10.0.0.1 --master_port=29500 train.py --data data/prepared

Recipes: `--config recipe.json` supplies defaults (TrainConfig field names), flags override.
Resume after a crash or a kill: add `--resume` (from SAVE_DIR/last) or `--resume PATH`.
Fine-tune or continue elsewhere: `--init_from CHECKPOINT` (or `default`, the model shipped in the
package) starts from those weights and their architecture, with a fresh optimizer and schedule.

What lands in SAVE_DIR:

    best/   lowest validation nats/event (the last model when there is no valid split)
    last/   the latest state, plus trainer_state.safetensors/.json to resume from
    metrics.jsonl  one JSON line per log point; tensorboard/  the same curves for TensorBoard

Each window is trained independently (the LSTM state starts at zero in every window): truncated
backpropagation through time over --seq_len events, at no cost to shuffling.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields

from ..errors import UserError
from ..files import NotRegularFile, read_text
from ..locks import folder_lock
from .checkpoints import STATE_JSON, _find_resume
from .config import ARCH_FIELDS, ENV_FIELDS, TrainConfig
from .loop import Trainer

# The docstring above is the help of `classical-music train` and `python train.py`: its first
# paragraph the description, the rest the epilog.

_HELP = {
    "data": "prepared token cache (made by `classical-music data prepare`)",
    "save_dir": "where best/, last/, metrics.jsonl and tensorboard/ go",
    "seq_len": "events per training window (backpropagation through time length)",
    "embed_size": "token embedding size",
    "hidden_size": "LSTM hidden size",
    "num_layers": "stacked LSTM layers",
    "dropout": "dropout between LSTM layers and before the output layer",
    "tie_weights": "share the embedding with the output layer",
    "conditions": "style conditions to learn: all (what the data has), none, or e.g. composer,period,density,key",
    "cond_dropout": "chance of leaving each condition unknown in a window (so any subset can be left out)",
    "composer_min_hours": "composers with less training music than this are `other`",
    "cond_lr": "learning rate of the condition embeddings (0 = --lr)",
    "init_from": "start from a checkpoint's weights and architecture (`default`: the shipped model)",
    "epochs": "passes over the training windows",
    "batch_size": "windows per step (per process under torchrun)",
    "lr": "peak learning rate (AdamW)",
    "min_lr_ratio": "cosine decay ends at lr times this",
    "weight_decay": "AdamW weight decay on weight matrices",
    "warmup_steps": "linear learning-rate warm-up steps",
    "grad_clip": "clip the gradient norm to this (0 = off)",
    "max_steps": "stop after this many steps (0 = epochs decide)",
    "transpose": "augmentation: random transposition up to ± this many semitones (0 = off)",
    "stretch": "augmentation: random tempo change up to ± this fraction (0 = off)",
    "velocity_shift": "augmentation: random loudness shift up to ± this many velocity bins (0 = off)",
    "patience": "stop after this many evaluations without a better val loss (0 = never)",
    "eval_every": "validate every this many steps, besides every epoch end (0 = epoch ends only)",
    "eval_batches": "at most this many validation batches per evaluation",
    "save_every": "write last/ every this many steps (a crash loses at most this many)",
    "log_every": "log a metrics line every this many steps",
    "seed": "random seed (runs on CPU are bit-for-bit repeatable)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "num_workers": "data loader worker processes",
    "threads": "CPU threads for PyTorch (default, or 0: half the cores, at least 1, or OMP_NUM_THREADS when set: "
               "more threads stall each other when other busy processes share the cores)",
    "config": "JSON file of defaults (TrainConfig field names); flags override it",
    "no_progress": "plain log lines instead of a progress bar",
    "overwrite": "replace the run already in --save_dir (without it, a new run there is refused)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are SUPPRESSed so we can tell typed flags from defaults: flags beat --config,
    # which beats a resumed run's settings, which beat TrainConfig's defaults.
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        name, default = f.name, getattr(defaults, f.name)
        if name == "resume":
            p.add_argument("--resume", nargs="?", const="last", default=argparse.SUPPRESS, metavar="PATH",
                           help="continue from SAVE_DIR/last, or from PATH (a last/ folder or a save dir)")
            continue
        help_text = _HELP.get(name, "")
        if isinstance(default, bool):
            p.add_argument(f"--{name}", action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        kind = {int: int, float: float}.get(type(default), str)
        shown = "" if default is None else f" (default: {default})"
        p.add_argument(f"--{name}", type=kind, default=argparse.SUPPRESS, metavar=name.upper(),
                       help=help_text + shown)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the LSTM on a prepared cache (checkpoints, resume, torchrun)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_arguments(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(TrainConfig)}}
    values: dict = {}
    recipe = _read_recipe(given["config"]) if given.get("config") else {}
    env = {**recipe, **given}
    if env.get("resume"):
        probe = TrainConfig(**{k: env[k] for k in ("resume", "save_dir") if k in env})
        folder = _find_resume(probe)
        try:
            saved = json.loads(read_text(folder / STATE_JSON))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot resume from {folder}: {STATE_JSON} is unreadable ({e})") from None
        saved = saved.get("config") if isinstance(saved, dict) else None
        if not isinstance(saved, dict):
            raise UserError(f"cannot resume from {folder}: {STATE_JSON} has no config object")
        values.update({k: v for k, v in saved.items() if k not in ENV_FIELDS and k in probe.__dict__})
        env["resume"] = str(folder)
        env.setdefault("save_dir", str(folder.parent))
    values.update(recipe)
    values.update(env)
    if env.get("resume") and values.get("init_from"):
        # that run took its shape from the --init_from weights, whatever the flags said
        values.update({k: saved[k] for k in ARCH_FIELDS if k in saved})
    return TrainConfig(**values)


def _read_recipe(path: str) -> dict:
    try:
        recipe = json.loads(read_text(path))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except NotRegularFile as e:
        raise UserError(f"--config {e}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(recipe, dict):
        raise UserError(f"--config {path}: expected a JSON object of TrainConfig fields")
    recipe = {k: v for k, v in recipe.items() if not k.startswith("_")}  # "_comment" and the like
    known = {f.name for f in fields(TrainConfig)} - {"config"}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise UserError(f"--config {path}: unknown field(s) {', '.join(unknown)}")
    defaults = TrainConfig()
    for k, v in recipe.items():
        want = type(getattr(defaults, k))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            recipe[k] = float(v)
        elif getattr(defaults, k) is not None and not (type(v) is want):
            raise UserError(f"--config {path}: {k} should be {want.__name__}, got {v!r}")
    return recipe


def train(cfg: TrainConfig) -> dict:
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 holds the lock for the whole run
        return Trainer(cfg).fit()
    with folder_lock(cfg.save_dir, "training run"):  # two runs in one save dir overwrite each other
        return Trainer(cfg).fit()


def run(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    return 130 if result["stop_reason"] == "interrupted" else 0  # as a shell reports Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Entry point for the repo-root `train.py` and `python -m classical_music.train`: the exit code."""
    import sys

    from ..cli import Parser, run as run_stage

    argv = sys.argv[1:] if argv is None else list(argv)
    for i, a in enumerate(argv):  # `python train.py --finetune FOLDER ...` is `classical-music finetune`
        if a == "--finetune" or a.startswith("--finetune="):
            from .finetune import main as finetune_main

            folder = argv[i + 1: i + 2] if a == "--finetune" else [a.split("=", 1)[1]]
            return finetune_main(folder + argv[:i] + argv[i + 1 + (a == "--finetune"):])
    p = Parser(prog="train.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add_arguments(p)
    return run_stage(run, p.parse_args(argv))
