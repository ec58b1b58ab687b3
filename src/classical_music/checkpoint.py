"""The checkpoint folder: a model as a Hugging Face-style folder, readable without this code and
without pickle (any safetensors / JSON reader opens it):

    config.json        ModelConfig + "model_type" + whatever training info the trainer adds
    model.safetensors  the weights (float32, or float16 for compact storage)
    tokenizer.json     the vocabulary the model was trained on

A folder is written beside its destination, each file fsynced, and renamed into place
(atomic_folder), so a crash mid-save never leaves a half-written checkpoint where a good one used
to be; a crash between the two renames is repaired by the next read or save (_recover_swap).
Loading checks config.json against the weights file's header before allocating anything, so a
damaged or mismatched folder is a one-line UserError rather than a huge allocation or a traceback.

ComposerLSTM.save_pretrained / from_pretrained are the doors; this module builds on model.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from .errors import UserError
from .files import require_regular
from .model import MAX_SIZES, ComposerLSTM, ModelConfig

MODEL_TYPE = "classical-music-lstm"
CONFIG_NAME = "config.json"
# Content digests (finetune_data.digest) of the MIDI files a model learned from, one a line: finetune
# says when a folder holds music the model has already learned.
TRAINED_ON_NAME = "trained_on.txt"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"


def save(
    model: ComposerLSTM,
    folder: str | os.PathLike,
    tokenizer=None,
    extra: dict | None = None,
    dtype: torch.dtype = torch.float32,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """ComposerLSTM.save_pretrained: config.json + model.safetensors (+ tokenizer.json), atomically."""
    from safetensors.torch import save_file

    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise UserError(f"cannot store weights as {dtype}: use float32, float16 or bfloat16")
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    config = {
        "model_type": MODEL_TYPE,
        **asdict(model.config),
        "torch_dtype": str(dtype).removeprefix("torch."),
        "num_parameters": model.num_parameters(),
    }
    for k, v in (extra or {}).items():
        config.setdefault(k, v)
    # safetensors refuses shared storage, and a tied head is the embedding anyway.
    tensors = {
        k: v.detach().to("cpu", dtype).contiguous()
        for k, v in model.state_dict().items()
        if not (model.config.tie_weights and k == "head.weight")
    }
    with atomic_folder(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        _write_text(tmp / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)
        for name, data in (extra_files or {}).items():
            _write_bytes(tmp / name, data)
    return Path(folder)


def load(cls: type[ComposerLSTM], path: str | os.PathLike, map_location="cpu") -> ComposerLSTM:
    """ComposerLSTM.from_pretrained: a checkpoint folder (or any file inside one) as a `cls`, in
    eval mode, float32, with .tokenizer (when the folder has one) and .checkpoint_config."""
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
    model.checkpoint_folder = folder  # and the files beside it (finetune reads TRAINED_ON_NAME)
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
