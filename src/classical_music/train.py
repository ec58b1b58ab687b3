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
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from . import threads as cpu_threads
from .errors import UserError
from .files import write_text
from . import conditions
from .model import ComposerLSTM, ModelConfig, checkpoint_folder, read_config
from .train_session import Estimate, StopOnSignal, duration, check_save_dir, clear_run, missing_cache_message, quiet_worker

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
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


class _SkipSampler(Sampler):
    """The distributed sampler's order for this epoch, minus the samples a resumed run has seen."""

    def __init__(self, inner: DistributedSampler):
        self.inner = inner
        self.skip = 0

    def __iter__(self):
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


# -- distributed -------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    owns_group: bool = False  # we called init_process_group, so we tear it down

    @property
    def master(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        d.owns_group = True
    return d


def _resolve_device(name: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is visible to PyTorch")
        if device.index is None:  # one GPU per process under torchrun
            device = torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(device)
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("--device mps: Apple MPS is not available on this machine")
        if distributed:
            raise UserError("distributed training needs CUDA or CPU, not MPS")
    elif device.type != "cpu":
        raise UserError(f"unsupported --device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "CPU"


# -- trainer -----------------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig):
        from .data.cache import Cache
        from .data.dataset import AugmentConfig, WindowDataset

        cfg.validate()
        cpu_threads.apply(cfg.threads or None)
        self.cfg = cfg
        self.save_dir = Path(cfg.save_dir)
        data = Path(cfg.data)
        if not (data / "index.npz").is_file():
            raise UserError(missing_cache_message(data))
        self.device = _resolve_device(cfg.device)
        self.dist = _setup_distributed(self.device)
        self.log = print if self.dist.master else (lambda *a, **k: None)
        torch.manual_seed(cfg.seed)

        cache = Cache(data)
        self.tokenizer = cache.tokenizer
        self.pad_id = self.tokenizer.pad_id
        self.resume_dir = _find_resume(cfg) if cfg.resume else None
        if not self.resume_dir:
            check_save_dir(self.save_dir, cfg.overwrite)
        if self.resume_dir:  # a resumed run keeps the vocabularies it started with
            vocab = read_config(checkpoint_folder(self.resume_dir)).get("conditions", {})
        else:
            names = conditions.parse_names(cfg.conditions, cache.available_conditions())
            vocab = conditions.vocabularies(cache.composer_hours(), cfg.composer_min_hours, names)
        self.vocab = vocab
        self.condition_hours = self._condition_hours()  # read once: every checkpoint records it
        augment = AugmentConfig(transpose=cfg.transpose, stretch=cfg.stretch, velocity=cfg.velocity_shift)
        self.train_ds = WindowDataset(cache, "train", cfg.seq_len, augment=augment, seed=cfg.seed,
                                      conditions=vocab, cond_dropout=cfg.cond_dropout)
        # Validation scores with each file's metadata conditions; density and key stay unknown
        # there, since they are read off the very events being predicted.
        self.valid_ds = WindowDataset(cache, "valid", cfg.seq_len, augment=None, seed=cfg.seed,
                                      conditions=vocab, event_conditions=False)
        if len(self.train_ds) == 0:
            raise UserError(f"{data} has no training windows: prepare more MIDI files into it")
        if len(self.valid_ds) == 0 and self.dist.master:
            warnings.warn(f"{data} has no valid split: training without validation or early stopping")
        self.sampler = DistributedSampler(
            self.train_ds, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True, seed=cfg.seed
        )
        self.batches_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.batches_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)

        # progress, restored by _load_state when resuming
        self.step = 0
        self.epoch = 0
        self.samples_in_epoch = 0  # this rank's samples already drawn from the current epoch
        self.best_val: float | None = None
        self.bad_evals = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.stop_reason: str | None = None

        if self.resume_dir:
            self.model = ComposerLSTM.from_pretrained(self.resume_dir)
            self._check_resumable_model()
        elif cfg.init_from:
            self.model = self._initial_model(cfg.init_from)
        else:
            self.model = ComposerLSTM(ModelConfig(
                vocab_size=self.tokenizer.vocab_size, embed_size=cfg.embed_size, hidden_size=cfg.hidden_size,
                num_layers=cfg.num_layers, dropout=cfg.dropout, tie_weights=cfg.tie_weights, conditions=vocab,
            ))
        self.model.tokenizer = self.tokenizer
        self.model.to(self.device).train()
        self.ddp_model = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        # Decay matrices only: shrinking biases (the forget-gate bias especially) only hurts.
        # Condition embeddings get their own group: a fine-tune can move them faster (--cond_lr)
        # than the weights it starts from.
        cond_params = [*self.model.cond_embed.parameters(), *self.model.cond_bias.parameters()]
        cond_ids = {id(p) for p in cond_params}
        rest = [p for p in self.model.parameters() if id(p) not in cond_ids]
        decay = [p for p in rest if p.dim() >= 2]
        no_decay = [p for p in rest if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cond_params:
            groups.append({"params": cond_params, "weight_decay": 0.0, "lr_scale": (cfg.cond_lr or cfg.lr) / cfg.lr})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=self.device.type == "cuda")
        # bf16 needs no loss scaling; GPUs without it (pre-Ampere) simply train in float32.
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            self.autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        else:
            self.autocast = nullcontext
        # Dropout masks differ per rank; resuming restores these streams exactly.
        torch.manual_seed(cfg.seed + 1 + self.dist.rank)
        if self.resume_dir:
            self._load_state(self.resume_dir)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> dict:
        cfg, d = self.cfg, self.dist
        if self.stop_reason == "early stopping" or self.step >= self.total_steps:
            why = f" ({self.stop_reason})" if self.stop_reason else f" of {self.total_steps}"
            self.log(f"{self.resume_dir} already finished at step {self.step}{why}; "
                     f"best val {_fmt_val(self.best_val)}. Nothing to do.")
            self._teardown()
            return self._summary()
        self.stop_reason = None
        if d.master:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            self._open_logs()
        self.log(
            f"training {self.model.num_parameters():,} parameters on {self.device}"
            + (f" x{d.world} processes" if d.world > 1 else "")
            + (f", conditions {', '.join(self.vocab)}" if self.vocab else "")
            + f": {len(self.train_ds):,} windows of {cfg.seq_len} events, "
            f"{self.batches_per_epoch} steps/epoch, {self.total_steps} steps"
            + (f", resuming at step {self.step}" if self.resume_dir else "")
        )
        from tqdm import tqdm

        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=cfg.no_progress or not d.master, desc="train")
        estimate = Estimate(self.total_steps, self.device, print if bar.disable else bar.write)
        self._reset_window()
        try:
            with StopOnSignal() as self._signal:
                while self.stop_reason is None:
                    for batch in self._epoch_loader():
                        loss = self.train_step(*batch)
                        self.step += 1
                        self.samples_in_epoch += len(batch[0])
                        end_of_epoch = self.samples_in_epoch >= len(self.sampler)
                        if self.step >= self.total_steps:
                            self.stop_reason = "max steps" if cfg.max_steps == self.total_steps else "all epochs"
                        elif self._signalled():
                            self.stop_reason = "interrupted"
                        self._window_loss += loss
                        self._window_steps += 1
                        self._after_step(end_of_epoch, bar)
                        if d.master:
                            estimate.after_step(self.step)
                        if self.stop_reason or end_of_epoch:
                            break
        finally:
            bar.close()
            self._teardown()
        self.log(self._summary_line())
        return self._summary()

    def _signalled(self) -> bool:
        """Ctrl-C or SIGTERM arrived. Under torchrun the ranks agree at log points, so they all
        stop at the same step (a per-step check would cost a GPU sync every step)."""
        if self.dist.world == 1:
            return self._signal.signum is not None
        if self.step % self.cfg.log_every:
            return False
        flag = torch.tensor([self._signal.signum is not None], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def train_step(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        c = None if c is None else c.to(self.device, non_blocking=True)
        with self.autocast():
            logits, _ = self.ddp_model(x, cond=c)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=self.pad_id)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lr = lr_at(self.step, self.cfg, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.step()
        self._window_tokens += (y != self.pad_id).sum()
        return loss.detach()

    def _epoch_loader(self):
        self.sampler.set_epoch(self.epoch)
        self.train_ds.set_epoch(self.epoch)
        skipper = _SkipSampler(self.sampler)
        skipper.skip = self.samples_in_epoch
        return DataLoader(
            self.train_ds, batch_size=self.cfg.batch_size, sampler=skipper, num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda", worker_init_fn=quiet_worker,
            # Its own generator: creating iterators must not advance the global (dropout) RNG.
            generator=torch.Generator().manual_seed(self.cfg.seed + self.epoch),
        )

    def _after_step(self, end_of_epoch: bool, bar) -> None:
        cfg = self.cfg
        done = self.stop_reason is not None
        val = None
        has_val = len(self.valid_ds) > 0
        improved = False
        due = end_of_epoch or done or (cfg.eval_every and self.step % cfg.eval_every == 0)
        if has_val and due and self.stop_reason != "interrupted":  # the user is waiting
            paused = time.perf_counter()
            val = self.evaluate()
            improved = self.best_val is None or val < self.best_val
            if improved:
                self.best_val, self.bad_evals = val, 0
            else:
                self.bad_evals += 1
                if cfg.patience and self.bad_evals >= cfg.patience:
                    self.stop_reason = "early stopping"
            self._window_paused += time.perf_counter() - paused
        if val is not None or done or self.step % cfg.log_every == 0:
            self._log_point(val, bar)
        if improved and self.dist.master:  # after the log point, so its record counts this window's tokens
            paused = time.perf_counter()
            self._save("best")
            self._window_paused += time.perf_counter() - paused
        bar.update(1)
        if end_of_epoch:
            self.epoch += 1
            self.samples_in_epoch = 0
        if self.stop_reason or self.step % cfg.save_every == 0:
            self._flush_counters()
            paused = time.perf_counter()
            if not has_val and self.dist.master:
                self._save("best")
            self._save("last")  # every rank: it gathers their RNG states
            self._window_paused += time.perf_counter() - paused

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean nats per event over (a spread-out subset of) the valid windows, across all ranks."""
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in self._valid_loader():
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            c = batch[2].to(self.device) if len(batch) > 2 else None
            with self.autocast():
                logits, _ = self.model(x, cond=c)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=self.pad_id,
                                     reduction="sum").double()
            count += (y != self.pad_id).sum()
        if self.dist.world > 1:
            both = torch.stack([total, count])
            dist.all_reduce(both)
            total, count = both[0], both[1]
        self.model.train()
        return float(total / count.clamp(min=1))

    def _valid_loader(self):
        n = len(self.valid_ds)
        cap = self.cfg.eval_batches * self.cfg.batch_size * self.dist.world
        # Evenly spaced windows: a cap then still covers every piece, not just the first few.
        idx = torch.linspace(0, n - 1, cap).round().long().unique().tolist() if n > cap else list(range(n))
        return DataLoader(self.valid_ds, batch_size=self.cfg.batch_size, sampler=idx[self.dist.rank :: self.dist.world],
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          worker_init_fn=quiet_worker, generator=torch.Generator().manual_seed(0))

    # -- logging -------------------------------------------------------------------------------

    def _open_logs(self) -> None:
        self.metrics_path = self.save_dir / "metrics.jsonl"
        if self.resume_dir:
            _truncate_metrics(self.metrics_path, self.step)
        else:  # only with --overwrite is there an old run here (checked at start): it goes
            clear_run(self.save_dir)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops curve points a crash left beyond the checkpoint we resume from
            self.tb = SummaryWriter(str(self.save_dir / "tensorboard"), purge_step=self.step or None)
        except ImportError:
            warnings.warn("tensorboard is not installed: curves go to metrics.jsonl only")

    def _reset_window(self) -> None:
        self._window_loss = torch.zeros((), device=self.device)
        self._window_steps = 0
        self._window_tokens = torch.zeros((), dtype=torch.int64, device=self.device)
        self._window_start = time.perf_counter()
        self._window_paused = 0.0  # evaluation and checkpoint time, kept out of tokens/s

    def _flush_counters(self) -> None:
        """Move the window's tokens and time into the run's totals before a checkpoint: one saved
        between log points would otherwise resume without them (the window restarts at zero)."""
        tokens = self._window_tokens.clone()
        if self.dist.world > 1:
            dist.all_reduce(tokens)
        now = time.perf_counter()
        self.tokens_seen += int(tokens)
        self.elapsed += now - self._window_start - self._window_paused
        self._window_tokens.zero_()
        self._window_start, self._window_paused = now, 0.0

    def _log_point(self, val: float | None, bar) -> None:
        seconds = time.perf_counter() - self._window_start - self._window_paused
        stats = torch.stack([self._window_loss.float(), self._window_tokens.float()])
        if self.dist.world > 1:
            dist.all_reduce(stats)
            stats[0] /= self.dist.world
        steps = max(1, self._window_steps)
        tokens = int(stats[1])
        self.tokens_seen += tokens
        self.elapsed += seconds
        rec = {
            "step": self.step,
            "epoch": round(self.epoch + self.samples_in_epoch / len(self.sampler), 4),
            "train_loss": round(float(stats[0]) / steps, 5) if self._window_steps else None,
            "lr": lr_at(self.step - 1, self.cfg, self.total_steps),
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
            "tokens_seen": self.tokens_seen,
            "elapsed_seconds": round(self.elapsed, 2),
        }
        if val is not None:
            rec["val_nats_per_event"] = round(val, 5)
            rec["val_perplexity"] = round(math.exp(min(val, 50.0)), 4)
        self._reset_window()
        if not self.dist.master:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for key, tag in (("train_loss", "train/loss"), ("lr", "train/lr"),
                             ("tokens_per_second", "train/tokens_per_second"),
                             ("val_nats_per_event", "val/nats_per_event"), ("val_perplexity", "val/perplexity")):
                if rec.get(key) is not None:
                    self.tb.add_scalar(tag, rec[key], self.step)
        post = {"loss": f"{rec['train_loss']:.3f}" if rec["train_loss"] is not None else "-",
                "tok/s": f"{rec['tokens_per_second'] or 0:,.0f}"}
        if val is not None:
            post["val"] = f"{val:.3f}"
        bar.set_postfix(post, refresh=False)
        if bar.disable or val is not None:
            line = (f"step {self.step}/{self.total_steps} epoch {rec['epoch']:.2f} loss {post['loss']} "
                    f"lr {rec['lr']:.2e} {post['tok/s']} tok/s")
            if seconds > 0 and self.step < self.total_steps:  # this window's pace, validation left out
                line += f" eta {duration(seconds / steps * (self.total_steps - self.step))}"
            if val is not None:
                line += f" | val {val:.4f} nats/event (ppl {rec['val_perplexity']:.2f})"
                patience = self.cfg.patience or "-"
                line += " best" if self.bad_evals == 0 else f" ({self.bad_evals}/{patience} without gain)"
            if bar.disable:
                print(line, flush=True)
            else:
                bar.write(line)

    # -- checkpoints ---------------------------------------------------------------------------

    def _training_info(self) -> dict:
        return {"training": {
            "step": self.step,
            "epoch": round(self.epoch + self.samples_in_epoch / len(self.sampler), 4),
            "best_val_nats_per_event": self.best_val,
            "tokens_seen": self.tokens_seen,
            "data": str(self.cfg.data),
            "hardware": self._hardware(),
            "recipe": self.cfg.config,  # the --config file, if any
            "config": {k: v for k, v in asdict(self.cfg).items() if k not in ENV_FIELDS},
        }, "composer_min_hours": self.cfg.composer_min_hours,
            # what --list_conditions shows: hours of training music behind each value
            "condition_hours": self.condition_hours}

    def _condition_hours(self) -> dict:
        stats = {}
        try:
            stats = json.loads((Path(self.cfg.data) / "cache.json").read_text(encoding="utf-8")).get("conditions", {})
        except (OSError, ValueError):
            pass
        return {n: stats.get(n, {}) for n in conditions.FILE_CONDITIONS if n in self.vocab}

    def _hardware(self) -> str:
        """What trained it, for model cards: timings mean little without it."""
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "mps":
            name = "Apple MPS"
        else:
            name = f"{_cpu_name()}, {torch.get_num_threads()} thread(s)"
        return f"{self.dist.world} x {name}" if self.dist.world > 1 else name

    def _save(self, which: str) -> None:
        if which == "best":
            self.model.save_pretrained(self.save_dir / "best", self.tokenizer, extra=self._training_info())
            return
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        ranks = [rng]
        if self.dist.world > 1:
            ranks = [None] * self.dist.world
            dist.all_gather_object(ranks, rng)
        if not self.dist.master:
            return
        from safetensors.torch import save as st_save

        tensors, scalars = _flatten_optimizer(self.optimizer.state_dict())
        for r, states in enumerate(ranks):
            for kind, t in states.items():
                tensors[f"rng.{kind}.rank{r}"] = t.cpu()
        state = {
            "format": 1,
            "step": self.step,
            "epoch": self.epoch,
            "samples_in_epoch": self.samples_in_epoch,
            "train_windows": len(self.train_ds),
            "world_size": self.dist.world,
            "total_steps": self.total_steps,
            # the schedule is a pure function of the step (lr_at), so this is all it needs
            "scheduler": {"name": "warmup_cosine", "step": self.step, "warmup_steps": self.cfg.warmup_steps,
                          "total_steps": self.total_steps, "min_lr_ratio": self.cfg.min_lr_ratio},
            "best_val": self.best_val,
            "bad_evals": self.bad_evals,
            "tokens_seen": self.tokens_seen,
            "elapsed_seconds": round(self.elapsed, 3),
            "stop_reason": self.stop_reason,
            "config": asdict(self.cfg),
            "optimizer": scalars,
        }
        self.model.save_pretrained(
            self.save_dir / "last", self.tokenizer, extra=self._training_info(),
            extra_files={STATE_TENSORS: st_save(tensors), STATE_JSON: json.dumps(state, indent=1).encode()},
        )
        if self.tb is not None:
            self.tb.flush()

    def _initial_model(self, source: str) -> ComposerLSTM:
        from .generate import load_model

        model = load_model(None if source == "default" else source).float()  # shipped weights are fp16
        if self.vocab and (model.config.conditions != self.vocab or not model.config.condition_bias):
            model = _with_conditions(model, self.vocab)
            self.log(f"condition embeddings for {', '.join(self.vocab)} start at zero: step 0 is {source} itself")
        if model.tokenizer.to_dict() != self.tokenizer.to_dict():
            raise UserError(f"{self.cfg.data} uses tokenizer {self.tokenizer.to_dict()} but --init_from {source} "
                            f"was trained with {model.tokenizer.to_dict()}: prepare the data with the same tokenizer")
        for name in ARCH_FIELDS:  # the weights decide the shape (the log line below says which)
            setattr(self.cfg, name, getattr(model.config, name))
        _set_dropout(model, self.cfg.dropout)
        self.log(f"starting from the weights of {source} "
                 f"({model.config.num_layers}x{model.config.hidden_size} LSTM, embed {model.config.embed_size})")
        return model

    def _check_resumable_model(self) -> None:
        c, saved = self.cfg, self.model.config
        for name in ARCH_FIELDS:
            if getattr(c, name) != getattr(saved, name):
                raise UserError(f"--{name} {getattr(c, name)} differs from the checkpoint's "
                                f"{getattr(saved, name)}: a resumed run keeps its architecture")
        if c.dropout != saved.dropout:  # regularisation, not shape: free to change mid-run
            _set_dropout(self.model, c.dropout)
        mine = self.tokenizer.to_dict()
        theirs = self.model.tokenizer.to_dict() if self.model.tokenizer else None
        if theirs is not None and theirs != mine:
            raise UserError(f"{self.cfg.data} uses tokenizer {mine} but {self.resume_dir} was trained "
                            f"with {theirs}: resume on the same data")

    def _load_state(self, folder: Path) -> None:
        from safetensors.torch import load_file

        try:
            state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / STATE_TENSORS))
        except Exception as e:  # noqa: BLE001 - any damage means the same thing to the user
            raise UserError(f"cannot resume from {folder}: trainer state is missing or corrupt ({e})") from None
        try:
            self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        except (KeyError, ValueError, RuntimeError) as e:
            raise UserError(f"cannot resume from {folder}: optimizer state does not fit the model ({e})") from None
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.samples_in_epoch = state["samples_in_epoch"]
        self.best_val = state["best_val"]
        self.bad_evals = state["bad_evals"]
        self.tokens_seen = state.get("tokens_seen", 0)
        self.elapsed = state.get("elapsed_seconds", 0.0)
        self.stop_reason = state.get("stop_reason")
        same_layout = state["train_windows"] == len(self.train_ds) and state["world_size"] == self.dist.world
        if not same_layout:
            if self.dist.master:
                warnings.warn("the data or process count changed since the checkpoint: "
                              f"restarting epoch {self.epoch} from its beginning")
            self.samples_in_epoch = 0
        r = self.dist.rank if f"rng.torch.rank{self.dist.rank}" in tensors else 0
        torch.set_rng_state(tensors[f"rng.torch.rank{r}"])
        if self.device.type == "cuda" and f"rng.cuda.rank{r}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{r}"], self.device)

    # -- end -----------------------------------------------------------------------------------

    def _summary(self) -> dict:
        return {"step": self.step, "best_val_nats_per_event": self.best_val, "save_dir": str(self.save_dir),
                "stop_reason": self.stop_reason}

    def _summary_line(self) -> str:
        where = self.save_dir / "best"
        if self.stop_reason == "interrupted":
            return (f"interrupted at step {self.step}: saved {self.save_dir / 'last'} (and {where}); "
                    f"continue with --resume --save_dir {self.save_dir}")
        if self.best_val is None:
            return f"trained {self.step} steps ({self.stop_reason}), no validation split; saved {where}"
        return (f"trained {self.step} steps ({self.stop_reason}); best val {_fmt_val(self.best_val)}; "
                f"saved {where}")

    def _teardown(self) -> None:
        tb = getattr(self, "tb", None)
        if tb is not None:
            tb.close()
        if self.dist.owns_group:
            dist.destroy_process_group()


def _with_conditions(model: ComposerLSTM, vocab: dict) -> ComposerLSTM:
    """The same weights in a model with these condition vocabularies: embeddings of labels the old
    model knew are kept, new ones start at zero, so the new model computes what the old one did."""
    from dataclasses import replace

    new = ComposerLSTM(replace(model.config, conditions=vocab, condition_bias=True))
    old_state = model.state_dict()
    state = new.state_dict()
    for k in state:
        if not k.startswith(("cond_embed.", "cond_bias.")) and k in old_state:
            state[k] = old_state[k]
    for name, labels in vocab.items():
        old_labels = model.config.conditions.get(name, [])
        for part in ("cond_embed", "cond_bias"):
            key = f"{part}.{name}.weight"
            for i, label in enumerate(labels):
                if label in old_labels and key in old_state:
                    state[key][i] = old_state[key][old_labels.index(label)]
    new.load_state_dict(state)
    new.tokenizer = model.tokenizer
    return new


def _set_dropout(model: ComposerLSTM, p: float) -> None:
    model.config.dropout = model.drop.p = p
    if model.config.num_layers > 1:
        model.lstm.dropout = p


def _fmt_val(val: float | None) -> str:
    return "n/a" if val is None else f"{val:.4f} nats/event (perplexity {math.exp(min(val, 50)):.2f})"


def _flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    """optimizer.state_dict() -> (tensors for safetensors, everything else for JSON): no pickle."""
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state_scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, t in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    for pid, extra in meta.get("state_scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (and any line a kill cut short)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(line + "\n" for line in keep))


def _find_resume(cfg: TrainConfig) -> Path:
    """The last/ folder to resume from: SAVE_DIR/last, or --resume PATH (a last/ or a save dir)."""
    if cfg.resume in ("last", True):
        candidates = [Path(cfg.save_dir) / "last"]
    else:
        candidates = [Path(cfg.resume), Path(cfg.resume) / "last"]
    for c in candidates:
        try:
            folder = checkpoint_folder(c)  # also repairs a swap a crash interrupted
        except UserError:
            continue
        if (folder / STATE_JSON).is_file():
            return folder
    raise UserError(f"nothing to resume: no {STATE_JSON} in {' or '.join(map(str, candidates))}")


# -- command line ------------------------------------------------------------------------------

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
    "threads": "CPU threads for PyTorch (0 = half the cores, at least 1, or OMP_NUM_THREADS when set: "
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
            saved = json.loads((folder / STATE_JSON).read_text(encoding="utf-8")).get("config", {})
        except (OSError, ValueError) as e:
            raise UserError(f"cannot resume from {folder}: {STATE_JSON} is unreadable ({e})") from None
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
        recipe = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
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
    return Trainer(cfg).fit()


def run(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    return 130 if result["stop_reason"] == "interrupted" else 0  # as a shell reports Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Entry point for the repo-root `train.py` and `python -m classical_music.train`: the exit code."""
    from .cli import Parser, run as run_stage

    p = Parser(prog="train.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add_arguments(p)
    return run_stage(run, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
