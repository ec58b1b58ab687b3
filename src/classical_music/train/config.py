"""TrainConfig: every setting of a training run (flag names and defaults) and their checks, and
the learning-rate schedule they define (lr_at)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UserError

ARCH_FIELDS = ("embed_size", "hidden_size", "num_layers", "tie_weights")
# Where and how to run, not what to train: never carried over from a resumed run.
ENV_FIELDS = ("resume", "save_dir", "device", "num_workers", "threads", "no_progress", "config", "overwrite")


@dataclass
class TrainConfig:
    data: str = "data/prepared"
    save_dir: str = "checkpoints"
    # model
    seq_len: int = 256
    embed_size: int = 256
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.2
    tie_weights: bool = False
    # optimisation
    epochs: int = 100
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0  # 0 = off
    max_steps: int = 0  # 0 = epochs decide
    # augmentation (performance tokenizer): ± semitones, ± time fraction, ± velocity bins
    transpose: int = 3
    stretch: float = 0.05
    velocity_shift: int = 2
    # style conditions (classical_music.conditions): "all" = every one the cache has, "none", or
    # a list like "composer,period,density"; each is dropped to "any" with cond_dropout
    conditions: str = "all"
    cond_dropout: float = 0.5
    composer_min_hours: float = 1.0  # composers with less training music are "other"
    cond_lr: float = 0.0  # learning rate of the condition embeddings (0 = lr)
    # evaluation, early stopping, checkpoints, logs
    patience: int = 10  # evaluations without improvement before stopping; 0 = never stop early
    eval_every: int = 500  # steps; validation also runs at every epoch end. 0 = epoch ends only
    eval_batches: int = 50
    save_every: int = 500
    log_every: int = 50
    # environment
    seed: int = 1337
    device: str = "auto"
    num_workers: int = 2
    threads: int = 0  # CPU threads for PyTorch; 0 = classical_music.threads' default
    resume: str | None = None  # "last" = SAVE_DIR/last, or a path
    init_from: str | None = None  # start from these weights ("default" = the shipped model)
    config: str | None = None
    no_progress: bool = False
    overwrite: bool = False  # a new run may replace the run already in save_dir

    def validate(self) -> None:
        positive = ("seq_len", "embed_size", "hidden_size", "num_layers", "epochs", "batch_size",
                    "eval_batches", "save_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "warmup_steps", "patience", "eval_every", "num_workers", "threads",
                     "transpose", "velocity_shift"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must not be negative, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.stretch < 1:
            raise UserError(f"--stretch must be in [0, 1), got {self.stretch}")
        if not 0 <= self.cond_dropout <= 1:
            raise UserError(f"--cond_dropout must be in [0, 1], got {self.cond_dropout}")
        if self.composer_min_hours < 0 or self.cond_lr < 0:
            raise UserError("--composer_min_hours and --cond_lr must not be negative")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise UserError("--weight_decay and --grad_clip must not be negative")


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))
