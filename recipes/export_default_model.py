"""Copy a trained checkpoint into the package as the default model (float16), and score it.

    python recipes/export_default_model.py checkpoints/default/best
    python recipes/export_default_model.py checkpoints/small-cpu-continued/best   # a run started --init_from

Writes src/classical_music/pretrained/default/ (config.json, model.safetensors, tokenizer.json,
evaluation.json), the learning curve (docs/learning_curve.png) and the numbers table of
MODEL_CARD.md. evaluation.json holds the whole-file likelihood on the shared corpus's valid split,
measured on the exported float16 weights, so the numbers describe exactly what ships.

A run started with `--init_from` (the second stage of the recipe) counts the steps and time of the
model it started from: those come from the weights it replaces in the package when it started
from them (`--init_from default`), or from its own `--init_from` folder's training record.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classical_music.evaluate import collect, evaluate  # noqa: E402
from classical_music.files import write_json, write_text  # noqa: E402
from classical_music.model import ComposerLSTM  # noqa: E402

DEST = ROOT / "src" / "classical_music" / "pretrained" / "default"
CORPUS = ROOT.parent / "shared" / "data" / "classical-piano"


def learning_curve(metrics: list[dict], out: Path, batch: int, seq: int, whole: float, offset: int = 0,
                   start: dict | None = None) -> None:
    """Loss and validation by step, and the shipped weights' whole-file score at their step; a
    second stage is drawn from `offset`, after its start point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot([offset + m["step"] for m in metrics], [m["train_loss"] for m in metrics], lw=1, alpha=0.7,
            label=f"train loss (windows of {seq} events, augmented)")
    val = [m for m in metrics if "val_nats_per_event" in m]
    ax.plot([offset + m["step"] for m in val], [m["val_nats_per_event"] for m in val], "o-", lw=2,
            label="valid nats/event (windows)")
    if start:
        ax.axvline(offset, color="C3", lw=1, ls=":")
        ax.plot([offset], [start["window_val_nats_per_event"]], "s", color="C3",
                label=f"stage 1 ended here ({offset:,} steps)")
    if val:
        best = min(val, key=lambda m: m["val_nats_per_event"])
        ax.plot([offset + best["step"]], [whole], "*", ms=14, color="C2",
                label=f"what ships: {whole:.3f} on whole files (state carried)")
    ax.axhline(2.2, color="grey", ls="--", lw=1, label="goal 2.2 (Performance RNN 1.969)")
    ax.set_xlabel(f"step ({batch} x {seq} events each)")
    ax.set_ylabel("nats / event")
    ax.set_title("Default model: learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def card_numbers(config: dict, info: dict, r: dict, size_mb: float) -> str:
    """The numbers block of MODEL_CARD.md, written from what was exported and measured."""
    batch, seq = info["recipe_config"]["batch_size"], info["recipe_config"]["seq_len"]
    events = info["trained_steps"] * batch * seq
    training = f"{info['trained_steps']:,} steps × {batch} windows × {seq} events = {events / 1e6:.0f} M events"
    if info.get("stages"):  # each stage at its own batch and window: one product would mislabel both
        training = "; ".join(f"stage {i + 1}: " + _steps(st) for i, st in enumerate(info["stages"]))
    hours = (info["train_seconds"] or 0) / 3600
    return "\n".join([
        "| | |",
        "|---|---|",
        f"| architecture | Embedding {config['embed_size']} → {config['num_layers']} × LSTM {config['hidden_size']} → "
        f"dropout {config['dropout']} → linear over {config['vocab_size']} events |",
        f"| parameters | {config['num_parameters']:,} |",
        f"| weights | `model.safetensors`, float16, {size_mb:.1f} MB |",
        f"| training | {training} (best checkpoint) |",
        f"| training time (steps only) | {_duration(hours)} on {info['hardware']} |",
        f"| valid nats/event, whole files, state carried (what ships, float16) | **{r['nats_per_event']:.3f}** |",
        f"| valid perplexity | {r['perplexity']:.1f} |",
        f"| valid nats/note; bits/second | {r['nats_per_note']:.2f}; {r['bits_per_second']:.0f} |",
        f"| valid nats/event during training ({seq}-event windows, fresh state) | {info['window_val_nats_per_event']:.3f} |",
        f"| valid set | {r['files']} files, {r['events']:,} events, {r['seconds'] / 3600:.1f} h |",
    ])


def _steps(stage: dict) -> str:
    if not stage.get("batch_size") or not stage.get("seq_len"):  # exported before stages recorded them
        return f"{stage['trained_steps']:,} steps"
    events = stage["trained_steps"] * stage["batch_size"] * stage["seq_len"]
    return (f"{stage['trained_steps']:,} steps × {stage['batch_size']} windows × {stage['seq_len']} events"
            f" = {events / 1e6:.1f} M events")


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def update_card(block: str) -> None:
    card = ROOT / "MODEL_CARD.md"
    text = card.read_text()
    start, end = "<!-- numbers:start -->", "<!-- numbers:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    write_text(card, f"{head}{start}\n{block}\n{end}{tail}")


STAGE_FIELDS = ("trained_steps", "train_seconds", "window_val_nats_per_event", "batch_size", "seq_len")


def _trained(folder: Path) -> tuple[dict, list[dict], dict]:
    """A training checkpoint's record, its run's metrics up to it, and its stage fields."""
    training = json.loads((folder / "config.json").read_text())["training"]
    log = folder.parent / "metrics.jsonl"
    metrics = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    at_step = [m for m in metrics if m["step"] <= training["step"]]
    stage = {"trained_steps": training["step"],
             "train_seconds": at_step[-1].get("elapsed_seconds") if at_step else None,
             "window_val_nats_per_event": round(training["best_val_nats_per_event"], 5),
             "batch_size": training["config"].get("batch_size"), "seq_len": training["config"].get("seq_len")}
    return training, metrics, stage


def _stage_one(init_from: str | None) -> dict | None:
    """Steps, time and windowed validation of the model a run started from, or None."""
    if not init_from:
        return None
    folder = DEST if init_from == "default" else Path(init_from)
    config = json.loads((folder / "config.json").read_text())
    if "stages" in config:  # exported from a second stage already: start from its first
        return config["stages"][0]
    if "trained_steps" in config:  # an exported model (the package's): its one run's sizes
        sizes = config.get("recipe_config", {})
        return {k: config[k] if k in config else sizes.get(k) for k in STAGE_FIELDS}
    return _trained(folder)[2]  # a training checkpoint


def main(src: str) -> None:
    model = ComposerLSTM.from_pretrained(src)
    training, metrics, stage = _trained(Path(src))
    step, seconds = stage["trained_steps"], stage["train_seconds"]
    start = _stage_one(training["config"].get("init_from"))
    offset = start["trained_steps"] if start else 0
    info = {
        "training_data": "../shared/data/classical-piano train split: ASAP (CC BY-NC-SA 4.0) + piano-midi.de (CC BY-SA 3.0 DE)",
        "license": "CC BY-NC-SA 4.0 (inherited from the training data)",
        # The shipped run predates train.py recording its --config.
        "recipe": (training.get("recipe") or "recipes/default_model.json")
                  + (" then --init_from, see MODEL_CARD.md" if start else ""),
        "trained_steps": offset + step,
        "train_seconds": ((start or {}).get("train_seconds") or 0) + (seconds or 0) or None,
        "window_val_nats_per_event": stage["window_val_nats_per_event"],
        "recipe_config": training["config"],
        # Older checkpoints lack the record: those were all trained on the development machine's CPU.
        "hardware": training.get("hardware", "one thread of a 2-vCPU AMD EPYC machine, no GPU"),
    }
    # what generate --list_conditions shows (the training hours behind each composer, period, kind)
    for key in ("condition_hours", "composer_min_hours"):
        if key in model.checkpoint_config:
            info[key] = model.checkpoint_config[key]
    if start:
        info["stages"] = [{k: start[k] for k in STAGE_FIELDS},
                          {"trained_steps": step, "train_seconds": seconds, "init_from": training["config"]["init_from"],
                           "lr": training["config"]["lr"], "batch_size": training["config"].get("batch_size"),
                           "seq_len": training["config"].get("seq_len")}]
    # Scored beside the package and swapped in whole: an export stopped during the long scoring
    # must not leave new weights without their evaluation.json (test_pretrained would fail).
    staging, old = DEST.with_name(".default.export"), DEST.with_name(".default.old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    model.save_pretrained(staging, tokenizer=model.tokenizer, extra=info, dtype=torch.float16)
    shipped = ComposerLSTM.from_pretrained(staging)
    files = collect([CORPUS], split="valid")
    r = evaluate(shipped, files, progress=True)
    write_json(staging / "evaluation.json", {"split": "valid", "corpus": "shared/data/classical-piano", **r})
    if DEST.exists():
        DEST.rename(old)
    staging.rename(DEST)
    shutil.rmtree(old, ignore_errors=True)
    learning_curve(metrics, ROOT / "docs" / "learning_curve.png", training["config"]["batch_size"],
                   training["config"]["seq_len"], r["nats_per_event"], offset, start)
    size = (DEST / "model.safetensors").stat().st_size / 2**20
    config = json.loads((DEST / "config.json").read_text())
    update_card(card_numbers(config, info, r, size))
    print(f"exported {DEST} ({size:.1f} MB): valid {r['nats_per_event']:.4f} nats/event, "
          f"perplexity {r['perplexity']:.2f} over {r['files']} files; MODEL_CARD.md numbers updated")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/default/best")
