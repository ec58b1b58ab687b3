"""Where a run trains: the --device it names, torchrun's process group (one process per GPU),
and the CPU's name for the model card."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


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
