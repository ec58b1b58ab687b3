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


def condition_codes(model, style: dict) -> tuple[torch.Tensor | None, dict[str, str]]:
    """What was asked for, checked against what the checkpoint knows -> [n] indices and labels."""
    vocab = model.config.conditions
    codes = conditions.encode_request(vocab, **style)
    if not vocab:
        return None, {}
    index = {n: codes.get(n, 0) for n in vocab}
    return torch.tensor(list(index.values()), dtype=torch.long), conditions.describe(vocab, index)


def list_conditions(model) -> str:
    """What --list_conditions prints: each condition's values, composers with their training hours."""
    vocab = model.config.conditions
    if not vocab:
        return "this checkpoint has no style conditions (it composes unconditioned)"
    cfg = getattr(model, "checkpoint_config", {}) or {}
    hours = cfg.get("condition_hours", {})
    lines = []
    for name, labels in vocab.items():
        known = [v for v in labels if v != conditions.ANY]
        if name == "composer":
            h = hours.get("composer", {})
            shown = [f"{v} ({conditions.composer_display(v)}, {h[v]:.1f} h)" if v in h else v for v in known]
            lines.append(f"composer (at least {cfg.get('composer_min_hours', conditions.COMPOSER_MIN_HOURS):g} h of "
                         f"training music; others are `other`):\n  " + "\n  ".join(shown))
        elif name in hours:
            lines.append(f"{name}: " + ", ".join(f"{v} ({hours[name][v]:.1f} h)" if v in hours[name] else v
                                                   for v in known))
        elif name == "density":
            lines.append("density: notes per second, e.g. 2, 4, 8, 16 (bins: " + ", ".join(known) + ")")
        else:
            lines.append("key: any of the 24 major and minor keys, e.g. C, Am, F# minor, Eb major")
    return "\n".join(lines)
