"""The models the studio can compose with: the one it started with, and every checkpoint folder in
`serve --models_dir` (default models/, where `classical-music finetune --out models/NAME` writes)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

DEFAULT_MODELS_DIR = Path("models")
MAX_MODELS = 100  # a folder of thousands of sub-folders lists its first hundred
SHIPPED = "shipped"


def _summary(config: dict) -> dict:
    """What the menu shows of a fine-tuned model: its folder and held-out scores."""
    ft = config.get("finetune")
    if not isinstance(ft, dict):
        return {}
    held = ft.get("held_out") if isinstance(ft.get("held_out"), dict) else {}
    out = {"folder": str(ft.get("folder_name") or ""), "pieces": held.get("pieces")}
    for k in ("shipped", "yours"):
        v = held.get(k)
        out[f"held_out_{k}"] = round(float(v), 4) if isinstance(v, (int, float)) else None
    return out


def list_models(models_dir: Path | None, startup=None) -> list[dict]:
    """[{"name", "path", "finetune"}], the startup model first (named `shipped` when it is the
    package's), then models_dir's checkpoint folders by name (hidden ones, such as a running
    fine-tune's working folder, left out)."""
    first = SHIPPED if startup is None else Path(startup).name or str(startup)
    models = [{"name": first, "path": None if startup is None else str(startup), "finetune": {}}]
    if models_dir is None or not Path(models_dir).is_dir():
        return models
    try:
        folders = sorted(p for p in Path(models_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return models
    for p in folders[:MAX_MODELS]:
        cfg = p / "config.json"
        if not (cfg.is_file() and (p / "model.safetensors").is_file()) or p.name == first:
            continue
        try:
            config = json.loads(cfg.read_text(encoding="utf-8")) if cfg.stat().st_size < 2**20 else {}
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("model_type") == "classical-music-lstm":
            models.append({"name": p.name, "path": str(p), "finetune": _summary(config)})
    return models


def find_model(models: list[dict], name: str) -> dict:
    for m in models:
        if m["name"] == name:
            return m
    known = ", ".join(m["name"] for m in models)
    raise UserError(f"no model named {name!r}: the studio has {known}")
