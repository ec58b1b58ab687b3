"""The model to compose with: a checkpoint folder or the one shipped in the package, on a device
this machine has, and the styles it knows (condition_codes, --list_conditions)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from .. import conditions
from ..errors import UserError

DEFAULT_MODEL = "default"


def check_device(device: str) -> None:
    """A one-line error for a device this machine does not have (instead of a loader's riddle)."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine (or this PyTorch build) has no CUDA GPU")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 ...")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: Apple's MPS is not available here")


def default_checkpoint() -> Path:
    return Path(str(resources.files("classical_music") / "pretrained" / DEFAULT_MODEL))


def load_model(checkpoint=None, device="cpu"):
    """A checkpoint folder (or a file in one); None means the model shipped in the package."""
    from ..model import ComposerLSTM

    if checkpoint is None:
        checkpoint = default_checkpoint()
        if not (checkpoint / "model.safetensors").is_file():
            raise UserError("this package has no built-in model; pass --checkpoint DIR (see `classical-music train`)")
    model = ComposerLSTM.from_pretrained(checkpoint, map_location=device)
    if getattr(model, "tokenizer", None) is None:
        raise UserError(f"{checkpoint} has no tokenizer.json; it cannot be used to compose")
    return model


def condition_codes(model, style: dict, parsed: dict | None = None) -> tuple[torch.Tensor | None, dict[str, str]]:
    """What was asked for (parsed: conditions.parse_request's, when already checked), checked against
    what the checkpoint knows -> [n] indices and labels."""
    vocab = model.config.conditions
    codes = conditions.encode_request(vocab, parsed, **style)
    if not vocab:
        return None, {}
    index = {n: codes.get(n, 0) for n in vocab}
    return torch.tensor(list(index.values()), dtype=torch.long), conditions.describe(vocab, index)


def list_conditions(model) -> str:
    """What --list_conditions prints: each condition's values, composers with their training hours."""
    return conditions.listing(model.config.conditions, getattr(model, "checkpoint_config", {}) or {})
