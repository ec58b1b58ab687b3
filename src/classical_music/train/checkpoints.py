"""A run's best/ and last/ folders: what a checkpoint records, saving it, resuming from it
(--resume), and starting from other weights (--init_from); a mixin of Trainer."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from .. import conditions
from ..checkpoint import checkpoint_folder
from ..errors import UserError
from ..files import read_text, require_regular
from ..model import ComposerLSTM
from .config import ARCH_FIELDS, ENV_FIELDS, TrainConfig
from .devices import _cpu_name

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


class Checkpoints:
    """Trainer's checkpoint half: last/ holds the trainer state too (optimizer, RNG streams,
    progress), safetensors and JSON, no pickle."""

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
            stats = json.loads(read_text(Path(self.cfg.data) / "cache.json")).get("conditions", {})
        except (OSError, ValueError, AttributeError):
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
        from ..generate import load_model

        model = load_model(None if source == "default" else source).float()  # shipped weights are fp16
        if self.vocab and (model.config.conditions != self.vocab or not model.config.condition_bias):
            model = with_conditions(model, self.vocab)
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

        def broken(why: str) -> UserError:
            return UserError(f"cannot resume from {folder}: {why}")

        try:
            state = json.loads(read_text(folder / STATE_JSON))
            require_regular(folder / STATE_TENSORS)  # safetensors opens it itself: a fifo would block it
            tensors = load_file(str(folder / STATE_TENSORS))
        except Exception as e:  # noqa: BLE001 - any damage means the same thing to the user
            raise broken(f"trainer state is missing or corrupt ({e})") from None
        _check_state(state, broken)
        rng = f"rng.torch.rank{self.dist.rank if f'rng.torch.rank{self.dist.rank}' in tensors else 0}"
        if rng not in tensors or tensors[rng].dtype != torch.uint8:
            raise broken(f"{STATE_TENSORS} has no random-number state ({rng})")
        try:
            self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
            _check_optimizer_shapes(self.optimizer)
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
            raise broken(f"optimizer state does not fit the model ({e})") from None
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
        try:
            torch.set_rng_state(tensors[rng])
        except RuntimeError as e:
            raise broken(f"{STATE_TENSORS} holds a damaged random-number state ({e})") from None
        r = rng.rsplit("rank", 1)[1]
        if self.device.type == "cuda" and f"rng.cuda.rank{r}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{r}"], self.device)


# trainer_state.json: each field the loop reads back, and what it must be
_COUNTS = ("step", "epoch", "samples_in_epoch", "bad_evals", "train_windows", "world_size")


def _check_state(state, broken) -> None:
    """A damaged trainer_state.json is named here, not by a TypeError steps later."""
    if not isinstance(state, dict):
        raise broken(f"{STATE_JSON} is not a JSON object")
    for k in _COUNTS:
        v = state.get(k)
        if type(v) is not int or v < 0:
            raise broken(f"{STATE_JSON}: {k} should be a whole number, got {v!r}" if k in state
                         else f"{STATE_JSON} has no {k}")
    for k in ("tokens_seen", "elapsed_seconds", "best_val"):
        v = state.get(k)
        if v is not None and (type(v) not in (int, float) or not math.isfinite(v) or v < 0):
            raise broken(f"{STATE_JSON}: {k} should be a number, got {v!r}")
    for k in ("optimizer", "config"):
        if not isinstance(state.get(k), dict):
            raise broken(f"{STATE_JSON}: {k} should be a JSON object, got {type(state.get(k)).__name__}")
    if not isinstance(state["optimizer"].get("param_groups"), list):
        raise broken(f"{STATE_JSON}: optimizer has no param_groups list")


def _check_optimizer_shapes(optimizer) -> None:
    """load_state_dict takes moment tensors of any shape; the first step would then fail."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.dim() and v.shape != p.shape:
                    raise ValueError(f"{key} has shape {tuple(v.shape)} for a parameter of shape {tuple(p.shape)}")


def with_conditions(model: ComposerLSTM, vocab: dict) -> ComposerLSTM:
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
