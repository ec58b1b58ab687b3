"""The composer: token embedding -> stacked LSTM -> dropout -> linear to next-event logits.

Checkpoints are Hugging Face-style folders, readable without this code and without pickle:

    config.json        ModelConfig + "model_type" + whatever training info the trainer adds
    model.safetensors  the weights (float32, or float16 for compact storage)
    tokenizer.json     the vocabulary the model was trained on

A folder is written beside its destination and renamed into place, so a crash mid-save never
leaves a half-written checkpoint where a good one used to be.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .errors import UserError
from .files import require_regular

if TYPE_CHECKING:  # decoding.py builds on this module; imported where a decoder is made
    from .decoding import StepDecoder

MODEL_TYPE = "classical-music-lstm"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"

State = tuple[torch.Tensor, torch.Tensor]


# Far past any model this package trains (3 x 512; tokens are uint16), yet small enough that a
# model of these sizes is built (on the meta device, to check shapes) in well under a second.
MAX_SIZES = {"vocab_size": 2**16, "embed_size": 2**15, "hidden_size": 2**15, "num_layers": 256}


@dataclass
class ModelConfig:
    vocab_size: int
    embed_size: int = 256
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.2
    # Share the embedding matrix with the output layer (fewer parameters, often better
    # perplexity). When embed_size != hidden_size a bias-free hidden->embed projection is
    # inserted before the output layer, so any sizes work.
    tie_weights: bool = False
    # Style conditions (classical_music.conditions): name -> its vocabulary, "any" first. Each
    # gets an embedding added to every step's input; {} is an unconditioned model.
    conditions: dict = field(default_factory=dict)
    # Each condition also adds a learned bias to the next-event logits: a direct path that learns
    # in a few hundred steps what the input embeddings alone learn in many thousands (measured:
    # input-only, a CPU fine-tune of 330 steps gained 0.002 nats and no audible control).
    condition_bias: bool = True

    def __post_init__(self):
        for name, most in MAX_SIZES.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"model {name} must be a positive integer, got {value!r}")
            if value > most:  # before anything is built: 100,000 layers took 25 min only to fail
                raise UserError(f"model {name} {value:,} is over the limit of {most:,}: a damaged config.json?")
        if type(self.dropout) not in (int, float) or not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("tie_weights", "condition_bias"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"model {name} must be true or false, got {getattr(self, name)!r}")
        from .conditions import ANY, NAMES

        if not isinstance(self.conditions, dict):
            raise UserError(f"model conditions must be an object of vocabularies, got {self.conditions!r}")
        for name, labels in self.conditions.items():
            if name not in NAMES:
                raise UserError(f"model condition {name!r} is unknown (known: {', '.join(NAMES)})")
            if (not isinstance(labels, list) or len(labels) < 2 or labels[0] != ANY
                    or not all(isinstance(v, str) for v in labels) or len(set(labels)) != len(labels)):
                raise UserError(f"model condition {name!r}: expected a list of distinct labels starting with {ANY!r}")
        # one order everywhere: the order of conditions.NAMES
        self.conditions = {n: list(self.conditions[n]) for n in NAMES if n in self.conditions}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Pick the known keys out of a config.json, ignoring training info stored beside them."""
        known = {f.name for f in fields(cls)}
        d = dict(d)
        if d.get("conditions") and "condition_bias" not in d:  # conditioned before the bias existed
            d["condition_bias"] = False
        return cls(**{k: v for k, v in d.items() if k in known})


class ComposerLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_size)
        # nn.LSTM applies dropout only between stacked layers; a single layer would warn.
        self.lstm = nn.LSTM(
            c.embed_size,
            c.hidden_size,
            num_layers=c.num_layers,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(c.dropout)
        out_size = c.hidden_size
        self.proj = None
        if c.tie_weights and c.embed_size != c.hidden_size:
            self.proj = nn.Linear(c.hidden_size, c.embed_size, bias=False)
            out_size = c.embed_size
        self.head = nn.Linear(out_size, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embed.weight
        # Zero at the start, so a model given conditions computes exactly what it did without them
        # (fine-tuning from an unconditioned checkpoint starts where that model was).
        self.cond_embed = nn.ModuleDict({n: nn.Embedding(len(v), c.embed_size) for n, v in c.conditions.items()})
        self.cond_bias = nn.ModuleDict(
            {n: nn.Embedding(len(v), c.vocab_size) for n, v in c.conditions.items()} if c.condition_bias else {})
        for emb in [*self.cond_embed.values(), *self.cond_bias.values()]:
            nn.init.zeros_(emb.weight)
        self.tokenizer = None  # set by from_pretrained when the folder has one
        self._init_weights()

    def _init_weights(self):
        # Small embeddings so a tied output layer starts near-uniform (loss ~ ln vocab); forget
        # gate bias 1 lets gradients flow through long windows from the first step
        # (Jozefowicz et al. 2015).
        nn.init.normal_(self.embed.weight, std=0.05)
        nn.init.zeros_(self.head.bias)
        h = self.config.hidden_size
        for name, p in self.lstm.named_parameters():
            if name.startswith("bias_ih"):
                with torch.no_grad():
                    p.zero_()
                    p[h : 2 * h].fill_(1.0)  # gate order: input, forget, cell, output
            elif name.startswith("bias_hh"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, state: State | None = None,
                cond: torch.Tensor | None = None, return_hidden: bool = False):
        """idx [B, T] int64 -> logits [B, T, vocab], plus (h, c) each [layers, B, hidden].

        cond: condition indices, [B, T, n] (per event) or [B, n] (the same at every step), one
        column per config.conditions entry in its order; None = all "any" (index 0, which has a
        learned embedding of its own in a conditioned model).
        Pass the returned state back in to continue a sequence one chunk (or one event) at a time.
        return_hidden: also return the top LSTM layer's output [B, T, hidden] (what the memory's
        cache stores, classical_music.memory), as a third value.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be [batch, time], got shape {tuple(idx.shape)}")
        x = self.embed(idx)
        if self.cond_embed:
            if cond is None:
                cond = torch.zeros(1, 1, len(self.cond_embed), dtype=torch.long, device=idx.device)
            cond = cond.view(cond.shape[0], 1, -1) if cond.dim() == 2 else cond
            x = x + self.condition_vector(cond)
        self.lstm.flatten_parameters()  # no-op on CPU; keeps cuDNN weights contiguous under DDP
        out, state = self.lstm(x, state)
        top = out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)
        logits = self.head(out)
        if self.cond_bias:
            logits = logits + self.condition_logits(cond)
        return (logits, state, top) if return_hidden else (logits, state)

    @torch.inference_mode()
    def step(self, idx: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One event for each sequence of the batch: idx [B] -> logits [B, vocab] and the new state.

        The same function as forward() on a [B, 1] input, in eval mode. For many steps, build a
        decoder() once and call that: it caches the fused weights this call rebuilds each time.
        """
        logits, (hs, cs) = self.decoder()(idx, state)
        return logits, (torch.stack(hs), torch.stack(cs))

    def decoder(self, int8: bool = False) -> "StepDecoder":
        """A fast one-event-at-a-time view of the current weights (rebuild it after training).

        int8: CPU only, nearly the same function at 1.3-3x the speed (see decoding.StepDecoder)."""
        from .decoding import StepDecoder

        return StepDecoder(self, int8=int8)

    def condition_vector(self, cond: torch.Tensor) -> torch.Tensor:
        """Sum of the condition embeddings: cond [..., n] -> [..., embed]."""
        if cond.shape[-1] != len(self.cond_embed):
            raise ValueError(f"cond has {cond.shape[-1]} columns, the model has {len(self.cond_embed)} conditions")
        return sum(emb(cond[..., k]) for k, emb in enumerate(self.cond_embed.values()))

    def condition_logits(self, cond: torch.Tensor) -> torch.Tensor:
        """Sum of the conditions' logit biases: cond [..., n] -> [..., vocab]."""
        return sum(emb(cond[..., k]) for k, emb in enumerate(self.cond_bias.values()))

    def num_parameters(self, trainable_only: bool = False) -> int:
        # parameters() already yields a tied matrix once.
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- checkpoints ---------------------------------------------------------------------------

    def save_pretrained(
        self,
        folder: str | os.PathLike,
        tokenizer=None,
        extra: dict | None = None,
        dtype: torch.dtype = torch.float32,
        extra_files: dict[str, bytes] | None = None,
    ) -> Path:
        """Write config.json + model.safetensors (+ tokenizer.json) to `folder`, atomically.

        extra: training info merged into config.json (model keys win on a clash).
        dtype: torch.float16 halves the file; from_pretrained always loads back float32.
        extra_files: more files written into the same atomic folder (the trainer's state).
        """
        from safetensors.torch import save_file

        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise UserError(f"cannot store weights as {dtype}: use float32, float16 or bfloat16")
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        config = {
            "model_type": MODEL_TYPE,
            **asdict(self.config),
            "torch_dtype": str(dtype).removeprefix("torch."),
            "num_parameters": self.num_parameters(),
        }
        for k, v in (extra or {}).items():
            config.setdefault(k, v)
        # safetensors refuses shared storage, and a tied head is the embedding anyway.
        tensors = {
            k: v.detach().to("cpu", dtype).contiguous()
            for k, v in self.state_dict().items()
            if not (self.config.tie_weights and k == "head.weight")
        }
        with atomic_folder(folder) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            _write_text(tmp / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False) + "\n")
            if tokenizer is not None:
                tokenizer.save(tmp)
            for name, data in (extra_files or {}).items():
                _write_bytes(tmp / name, data)
        return Path(folder)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location="cpu") -> "ComposerLSTM":
        """Load a checkpoint folder (or any file inside one) in eval mode, float32."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = checkpoint_folder(path)
        config = read_config(folder)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise UserError(f"{folder} has no {WEIGHTS_NAME}: not a complete checkpoint")
        try:
            model_config = ModelConfig.from_dict(config)
        except TypeError as e:  # a required key (vocab_size) is missing
            raise UserError(f"{folder / CONFIG_NAME} is not a model config: {e}") from None
        # Sizes first, from the weights file's header, before anything is allocated: an absurd
        # hidden_size in config.json would otherwise build a 40 GB model and only then fail.
        _check_shapes(cls, model_config, weights)
        model = cls(model_config)
        try:
            state = load_file(str(weights), device=str(map_location))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise UserError(f"cannot read {weights}: corrupt or truncated ({e})") from None
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        if model.config.tie_weights:
            state["head.weight"] = state.get("embed.weight")
        model.load_state_dict(state)  # names and shapes already checked against the header
        model.to(map_location)
        if (folder / TOKENIZER_NAME).is_file():
            from .tokenizer import load_tokenizer

            model.tokenizer = load_tokenizer(folder)
            if model.tokenizer.vocab_size != model.config.vocab_size:
                raise UserError(
                    f"{folder}: tokenizer has {model.tokenizer.vocab_size} tokens but the "
                    f"model expects {model.config.vocab_size}"
                )
        model.checkpoint_config = config  # training info, for reports
        return model.eval()


def _check_shapes(cls, config: ModelConfig, weights: Path) -> None:
    """UserError unless every tensor the config implies has that shape in the weights file.

    The expected shapes come from the model built on the meta device (no memory), so any parameter
    a config adds is checked too; the file's come from its header (safe_open reads no tensor data).
    """
    from safetensors import SafetensorError, safe_open

    try:
        require_regular(weights)
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot read {weights}: corrupt or truncated ({e})") from None
    sizes = ", ".join(f"{n}={getattr(config, n)}" for n in MAX_SIZES)

    def mismatch(k, shape):
        return UserError(f"{weights.parent / CONFIG_NAME} does not match {weights.name}: {k} has shape "
                         f"{found[k]} in the weights, the config ({sizes}) implies {shape}")

    # The main sizes straight from the header, before building even a meta model (whose cost
    # grows with the config's sizes, not the file's)
    c = config
    for k, shape in (("embed.weight", (c.vocab_size, c.embed_size)),
                     ("lstm.weight_ih_l0", (4 * c.hidden_size, c.embed_size)),
                     ("lstm.weight_hh_l0", (4 * c.hidden_size, c.hidden_size))):
        if k in found and found[k] != shape:
            raise mismatch(k, shape)
    layers = sum(1 for k in found if re.fullmatch(r"lstm\.weight_ih_l\d+", k))
    if layers and layers != c.num_layers:
        raise UserError(f"{weights.parent / CONFIG_NAME} does not match {weights.name}: the config says "
                        f"num_layers={c.num_layers}, the weights hold {layers}")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    if config.tie_weights:
        expected.pop("head.weight", None)  # stored once, as embed.weight
        found.pop("head.weight", None)
    for k, shape in expected.items():
        if k in found and found[k] != shape:
            raise mismatch(k, shape)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        def few(keys):  # a config with 1,000 layers must not print 4,000 names
            return "none" if not keys else ", ".join(keys[:4]) + (f" ... ({len(keys)} in all)" if len(keys) > 4 else "")
        raise UserError(f"{weights} does not match config.json: missing {few(missing)}; unexpected {few(unexpected)}")


# -- folders -----------------------------------------------------------------------------------


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """The checkpoint folder for a folder or a file inside one; recovers an interrupted swap."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.exists():
        _recover_swap(p)
    if not p.is_dir() or not (p / CONFIG_NAME).is_file():
        # a run stopped before its first validation has last/ but no best/: `--checkpoint
        # checkpoints/best` (the README's) or the save dir itself then means last/, with a note
        last = p.with_name("last") if p.name == "best" else p / "last"
        best = last.with_name("best")
        if not best.exists() and (last / CONFIG_NAME).is_file():
            import sys

            _recover_swap(best)
            if not best.exists():
                print(f"note: {best} does not exist (no validation has run yet); using {last}", file=sys.stderr)
                return last
    if not p.is_dir():
        raise UserError(f"no checkpoint at {path}" + _nearby_checkpoints(p))
    return p


def _nearby_checkpoints(p: Path) -> str:
    """`checkpoints/model.h5`, `checkpoints/`: point to the checkpoint folders a run left there."""
    found = [str(d / n) for d in dict.fromkeys((p, p.parent)) if d.is_dir() for n in ("best", "last")
             if (d / n / CONFIG_NAME).is_file()]
    return f": did you mean {' or '.join(found)}?" if found else ""


def read_config(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise UserError(f"{folder} has no {CONFIG_NAME}: not a checkpoint folder" + _nearby_checkpoints(folder))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: corrupt JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"cannot read {path}: expected a JSON object")
    if config.get("model_type") != MODEL_TYPE:
        raise UserError(
            f"{path} is not a classical-music LSTM (model_type {config.get('model_type')!r})"
        )
    return config


def _old_name(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


def _recover_swap(folder: Path) -> None:
    # A crash between "rename old away" and "rename new in" leaves only the old copy.
    old = _old_name(folder)
    if not folder.exists() and old.is_dir():
        try:
            os.replace(old, folder)
        except FileNotFoundError:  # another process (a DDP rank) repaired it first
            pass


@contextmanager
def atomic_folder(folder: str | os.PathLike):
    """Yield a temp folder beside `folder`; on success swap it in, on error leave `folder` as is."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _recover_swap(folder)
    old = _old_name(folder)
    if old.exists():  # leftover from a swap that finished renaming but not deleting
        shutil.rmtree(old)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # half-written by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    try:
        yield tmp
        _fsync_tree(tmp)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _fsync_tree(folder: Path) -> None:
    # Files must be on disk before the rename publishes them, or a power cut could publish
    # empty files under a good name.
    for f in folder.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)  # some writers (safetensors) create files private to the owner
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    # Makes renames durable; directories cannot be opened for fsync everywhere (Windows).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
