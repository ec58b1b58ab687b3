"""The composer: token embedding -> stacked LSTM -> dropout -> linear to next-event logits.

ModelConfig (its sizes, checked) and ComposerLSTM (the network). Reading and writing checkpoint
folders is checkpoint.py's (save_pretrained / from_pretrained call into it); the fast one-event
decoder that generation runs is decoding.StepDecoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn

from .errors import UserError

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
        from .checkpoint import save  # checkpoint.py builds on this module

        return save(self, folder, tokenizer, extra, dtype, extra_files)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location="cpu") -> "ComposerLSTM":
        """Load a checkpoint folder (or any file inside one) in eval mode, float32."""
        from .checkpoint import load

        return load(cls, path, map_location)
