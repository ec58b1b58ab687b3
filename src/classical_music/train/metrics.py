"""What a run writes as it goes: metrics.jsonl, TensorBoard curves, and the log lines beside
the progress bar (a mixin of Trainer: the methods read the trainer's state)."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from ..files import read_text, write_text
from .config import lr_at
from .session import clear_run, duration


class MetricsLog:
    """Trainer's logging half: a window of steps is summed up at each log point."""

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


def _fmt_val(val: float | None) -> str:
    return "n/a" if val is None else f"{val:.4f} nats/event (perplexity {math.exp(min(val, 50)):.2f})"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (and any line a kill cut short)."""
    if not path.exists():
        return
    keep = []
    for line in read_text(path).splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(line + "\n" for line in keep))
