"""The composer: token embedding -> stacked LSTM -> dropout -> linear to next-event logits.

Checkpoints are Hugging Face-style folders, readable without this code and without pickle:

    config.json        ModelConfig + "model_type" + whatever training info the trainer adds
    model.safetensors  the weights (float32, or float16 for compact storage)
    tokenizer.json     the vocabulary the model was trained on

A folder is written beside its destination and renamed into place, so a crash mid-save never
leaves a half-written checkpoint where a good one used to be.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn

from .errors import UserError

MODEL_TYPE = "classical-music-lstm"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"

State = tuple[torch.Tensor, torch.Tensor]


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
    # gets an embedding added to every step's input; {} is the unconditioned model of old.
    conditions: dict = field(default_factory=dict)
    # Each condition also adds a learned bias to the next-event logits: a direct path that learns
    # in a few hundred steps what the input embeddings alone learn in many thousands (measured:
    # input-only, a CPU fine-tune of 330 steps gained 0.002 nats and no audible control).
    condition_bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "embed_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"model {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserError(f"model dropout must be in [0, 1), got {self.dropout!r}")
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
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """idx [B, T] int64 -> logits [B, T, vocab], plus (h, c) each [layers, B, hidden].

        cond: condition indices, [B, T, n] (per event) or [B, n] (the same at every step), one
        column per config.conditions entry in its order; None = all "any" (index 0, which has a
        learned embedding of its own in a conditioned model).
        Pass the returned state back in to continue a sequence one chunk (or one event) at a time.
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
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)
        logits = self.head(out)
        if self.cond_bias:
            logits = logits + self.condition_logits(cond)
        return logits, state

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

        int8: CPU only, nearly the same function at 1.3-3x the speed (see StepDecoder)."""
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

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    if config.tie_weights:
        expected.pop("head.weight", None)  # stored once, as embed.weight
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot read {weights}: corrupt or truncated ({e})") from None
    if config.tie_weights:
        found.pop("head.weight", None)
    for k, shape in expected.items():
        if k in found and found[k] != shape:
            sizes = ", ".join(f"{n}={getattr(config, n)}" for n in ("vocab_size", "embed_size", "hidden_size",
                                                                   "num_layers"))
            raise UserError(f"{weights.parent / CONFIG_NAME} does not match {weights.name}: {k} has shape "
                            f"{found[k]} in the weights, the config ({sizes}) implies {shape}")
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        def few(keys):  # a config with 1,000 layers must not print 4,000 names
            return "none" if not keys else ", ".join(keys[:4]) + (f" ... ({len(keys)} in all)" if len(keys) > 4 else "")
        raise UserError(f"{weights} does not match config.json: missing {few(missing)}; unexpected {few(unexpected)}")


# -- folders -----------------------------------------------------------------------------------


class StepDecoder:
    """Single-step LSTM for decoding, with weights pre-arranged once.

    nn.LSTM on CPU pays ~3.5 ms of oneDNN set-up on every one-step call, and torch.lstm_cell does
    two matmuls and ten small ops per layer. Here the first layer's input projection is a lookup
    table (embedding @ W_ih, biases folded in), each further layer does one matmul on [x, h], and
    the cell applies one sigmoid to all four gates (the cell-input gate's weights are doubled,
    since tanh(x) = 2 sigmoid(2x) - 1). Default model (3 x 512), one core: ~1 ms a step at batch 1.

    int8=True (CPU only) runs the matmuls through PyTorch's int8 kernels (fbgemm on x86, qnnpack
    on ARM) with one weight scale per output row: ~0.3 ms at batch 1, and ~0.55 ms instead of
    ~3.7 ms at batch 8, a step being bound by reading the weights. Whole-file nats/event on valid
    files move by < 0.001; next-event distributions by less than a 5 % change of temperature
    (tests/test_pretrained.py). docs/benchmarks.md has the measurements.
    """

    @torch.inference_mode()
    def __init__(self, model: ComposerLSTM, int8: bool = False):
        if int8 and model.head.weight.device.type != "cpu":
            raise ValueError("int8 decoding runs on the CPU only")
        lstm, n, hid = model.lstm, model.config.num_layers, model.config.hidden_size
        double_g = torch.ones(4 * hid, 1, device=model.head.weight.device)
        double_g[2 * hid:3 * hid] = 2.0  # gate order: input, forget, cell, output
        bias = [(getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")) * double_g[:, 0] for k in range(n)]
        w_ih = [getattr(lstm, f"weight_ih_l{k}") * double_g for k in range(n)]
        w_hh = [getattr(lstm, f"weight_hh_l{k}") * double_g for k in range(n)]
        self.table = torch.addmm(bias[0], model.embed.weight, w_ih[0].t())  # [vocab, 4H]
        linear = _int8_linear if int8 else _float_linear
        self.hh0 = linear(w_hh[0], None)
        self.layers = [linear(torch.cat([w_ih[k], w_hh[k]], 1), bias[k]) for k in range(1, n)]
        self.proj = None if model.proj is None else _float_linear(model.proj.weight, None)
        self.head = linear(model.head.weight, model.head.bias)
        self.int8 = int8
        self._model, self._w_ih0 = model, w_ih[0]
        # A conditioned model asked for nothing still adds its "any" embeddings.
        n = len(model.cond_embed)
        self.any_terms = self.conditioning(torch.zeros(1, n, dtype=torch.long, device=w_ih[0].device)) if n else None

    @torch.inference_mode()
    def conditioning(self, cond: torch.Tensor | None):
        """cond [B, n] -> what the conditions add to the first layer's gates [B, 4H] and to the
        logits [B, vocab] (or None), computed once per piece; None for an unconditioned model."""
        if cond is None or not self._model.cond_embed:
            return getattr(self, "any_terms", None)
        return condition_terms(self._model, self._w_ih0, cond)

    @staticmethod
    def _cell(gates, c):
        i, f, g, o = torch.sigmoid(gates).chunk(4, 1)  # g holds sigmoid(2x): tanh(x) = 2g - 1
        c = torch.addcmul(f * c - i, i, g, value=2.0)  # f c + i tanh(x)
        return o * torch.tanh(c), c

    @torch.inference_mode()
    def __call__(self, idx: torch.Tensor, state) -> tuple[torch.Tensor, tuple[list, list]]:
        """idx [B] -> logits [B, vocab] and the new state as two lists of [B, hidden], one per layer.

        `state` may be forward()'s stacked (h, c) or a previous call's lists.
        """
        return self.step(idx, state)

    def step(self, idx: torch.Tensor, state, terms=None) -> tuple[torch.Tensor, tuple[list, list]]:
        """The same, for a caller already under torch.inference_mode() (switching costs ~4 us).

        terms: conditioning(cond), added to the first layer's input and the logits (two adds per
        step); None = all "any"."""
        h, c = state
        first = self.table.index_select(0, idx)
        gates, bias = (self.any_terms if terms is None else terms) or (None, None)
        if gates is not None:
            first = first + gates
        x, ck = self._cell(self.hh0(h[0], first), c[0])
        hs, cs = [x], [ck]
        for k, layer in enumerate(self.layers, 1):
            x, ck = self._cell(layer(torch.cat([x, h[k]], 1)), c[k])
            hs.append(x)
            cs.append(ck)
        if self.proj is not None:
            x = self.proj(x)
        logits = self.head(x)
        return (logits if bias is None else logits + bias), (hs, cs)


def condition_terms(model: ComposerLSTM, w_ih0: torch.Tensor, cond: torch.Tensor):
    """What cond [..., n] adds to the first layer's gates ([..., 4H], through w_ih0, the decoders'
    gate-scaled input weights) and to the logits ([..., vocab], or None): forward()'s two
    condition terms, for the decoders that fold the input projection into a table."""
    bias = model.condition_logits(cond) if model.cond_bias else None
    return model.condition_vector(cond) @ w_ih0.t(), bias


@functools.cache
def int8_available() -> bool:
    """Whether this PyTorch runs the int8 decoder on the CPU (fbgemm on x86, qnnpack on ARM)."""
    try:
        _int8_linear(torch.ones(8, 8), None)(torch.ones(1, 8))
        return True
    except Exception:  # no engine in this build, or a PyTorch that dropped these ops
        return False


def _float_linear(weight, bias):
    """x @ weight.T + bias, or + `add` in its place (the first layer's table row), as one addmm."""
    w = weight.t().contiguous()
    b = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device) if bias is None else bias
    return lambda x, add=None: torch.addmm(b if add is None else add, x, w)


def _int8_linear(weight, bias):
    """The same with int8 weights, one scale per output row (symmetric, so no zero points)."""
    import warnings

    w = weight.detach().float().cpu()
    scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # PyTorch plans to move these to torchao; int8_available() checks
        warnings.simplefilter("ignore")
        qw = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float().cpu())
    # The resolved overload's C++ entry: the packet torch.ops.quantized.linear_dynamic costs ~12 us
    # more per call and the overload's Python checks (for torch.compile's fake objects) ~3 us more.
    overload = torch.ops.quantized.linear_dynamic.default
    op = getattr(overload, "_op", overload)
    # 7-bit activations on x86, so CPUs without VNNI cannot saturate fbgemm's 16-bit sums; qnnpack
    # (ARM) has no such sums and warns that it ignores the flag.
    reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")

    def f(x, add=None):
        y = op(x, packed, reduce_range)
        return y if add is None else y + add
    return f


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """The checkpoint folder for a folder or a file inside one; recovers an interrupted swap."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.exists():
        _recover_swap(p)
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
