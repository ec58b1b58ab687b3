"""Trainer: builds a run's data, model and optimizer, then trains it step by step (fit), with
validation, early stopping and a save at every save point."""

from __future__ import annotations

import math
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from .. import conditions
from .. import threads as cpu_threads
from ..checkpoint import checkpoint_folder, read_config
from ..errors import UserError
from ..model import ComposerLSTM, ModelConfig
from .checkpoints import Checkpoints, _find_resume
from .config import TrainConfig, lr_at
from .devices import _resolve_device, _setup_distributed
from .metrics import MetricsLog, _fmt_val

SMALL_RECIPE = (384, 2)  # recipes/small_cpu_model.json's hidden_size and num_layers
from .session import Estimate, StopOnSignal, check_save_dir, missing_cache_message, quiet_worker


def _check_finite(loss: torch.Tensor, what: str, step: int, resumed) -> None:
    """Stop at the first NaN or infinite loss: nothing is learned from it, and neither metrics.jsonl
    (which must stay JSON) nor best/ nor last/ may record it. The check costs a device sync."""
    if not bool(torch.isfinite(loss)):
        hint = (f"the weights resumed from {resumed} are probably broken (NaN)" if resumed else
                "broken starting weights (--init_from?) or too high a --lr")
        raise UserError(f"stopped at step {step}: the {what} is {float(loss)} (not finite), so nothing of "
                        f"this step was saved; {hint}")


class _SkipSampler(Sampler):
    """The distributed sampler's order for this epoch, minus the samples a resumed run has seen."""

    def __init__(self, inner: DistributedSampler):
        self.inner = inner
        self.skip = 0

    def __iter__(self):
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


class Trainer(MetricsLog, Checkpoints):
    def __init__(self, cfg: TrainConfig):
        from ..data.cache import Cache
        from ..data.dataset import AugmentConfig, WindowDataset

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
        small = cfg.hidden_size <= SMALL_RECIPE[0] and cfg.num_layers <= SMALL_RECIPE[1]
        estimate = Estimate(self.total_steps, self.device, print if bar.disable else bar.write, small=small)
        self._reset_window()
        try:
            with StopOnSignal() as self._signal:
                while self.stop_reason is None:
                    for batch in self._epoch_loader():
                        loss = self.train_step(*batch)
                        _check_finite(loss, "training loss", self.step + 1, self.resume_dir)
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
            _check_finite(torch.tensor(val), "validation loss", self.step, self.resume_dir)
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

    # -- end -----------------------------------------------------------------------------------

    def _summary(self) -> dict:
        return {"step": self.step, "best_val_nats_per_event": self.best_val, "save_dir": str(self.save_dir),
                "stop_reason": self.stop_reason}

    def _summary_line(self) -> str:
        where = self.save_dir / "best"
        if self.stop_reason == "interrupted":
            # best/ exists only once a validation has run: name exactly what is on disk
            best = f" and {where} (best val {_fmt_val(self.best_val)})" if (where / "config.json").is_file() else \
                f"; no {where} yet (no validation had run), so use --checkpoint {self.save_dir / 'last'}"
            return (f"interrupted at step {self.step}: saved {self.save_dir / 'last'}{best}; "
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
            # every rank past its last collective before any tears down: a rank whose peer closed
            # the gloo sockets first aborted at exit now and then ("terminate called ..."). Not
            # after an error, when a peer may never arrive.
            if sys.exc_info()[0] is None:
                dist.barrier()
            dist.destroy_process_group()
