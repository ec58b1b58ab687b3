"""Batched likelihood scoring: many files at once, each batch row carrying its own file's LSTM state.

A row holds one file from its first event to its last; when a file ends its row is refilled with
the next file (state zeroed) at the next chunk, so the batch stays full until the files run out.
Time is cut into chunks of at most ``chunk`` events, so memory is bounded by batch x chunk for any
file length, and the state is carried across chunks exactly as in the single-file path
(evaluate.file_nll): the totals agree with it file by file to float32 rounding.

Each item may carry a per-file extra input (``cond``: a style condition, say) that rides along
with its row: the rows' conds are stacked into one tensor per chunk and passed to the forward as
``cond=`` (ComposerLSTM.forward's: condition indices, [n] per file, so [B, n] per chunk).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, List, Optional, Union

import numpy as np
import torch

from .errors import UserError
from .decoding import float_linear, condition_terms, gate_scaled, int8_available, int8_pack

IGNORE = -100  # cross_entropy's ignore_index: the padded tail of a row whose file ended mid-chunk

# Batch x chunk per device. CPU: the recurrent matmuls reach most of their speed by batch 64
# (batch 1: ~1,800 events/s, batch 64: ~4,000 on one core, float32), and a chunk of 256 wastes at
# most 255 padded steps per file end (~2 % for 7,000-event files). GPU: wide enough to fill it.
DEFAULTS = {"cpu": (64, 256), "cuda": (256, 512)}
SCORE_PRECISIONS = ("float32", "int8")
SPLIT_BELOW = 8  # float32 on CPU: narrower batches run row by row (see make_forward)
# int8 path, native-bf16 CPUs: from this batch width the recurrence runs in bf16 (AMX) instead.
# Measured, one layer-step of the scripted loop, H=512, one thread (Xeon, AMX): batch 1 29 us int8 /
# 108 us bf16 (bf16 weights are 2 MB, past the core's L2), 16: 142 / 162, 20: 194 / 180,
# 64: 486 / 363; and bf16's gate error is a fifth of int8's (rms 0.0021 against 0.011).
BF16_FROM = 20


@dataclass
class Item:
    key: Any  # returned with the file's total
    tokens: np.ndarray  # the whole file, BOS first; tokens[1:] are scored
    cond: Any = None  # per-file extra input for the forward (array-like), or None


def defaults(device) -> tuple[int, int]:
    return DEFAULTS["cpu" if torch.device(device).type == "cpu" else "cuda"]


def make_forward(model, precision: str = "float32", device="cpu", hidden: bool = False) -> Callable:
    """forward(idx [B, T], state | None, cond | None) -> (logits [B, T, V], (h, c) [layers, B, H]),
    and with hidden=True the top LSTM layer's output [B, T, H] third (for the memory's cache)."""
    if precision not in SCORE_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(SCORE_PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        if torch.device(device).type != "cpu":
            raise UserError("--precision int8 runs on the CPU only: use float32 on a GPU")
        if not int8_available():
            raise UserError("this PyTorch has no int8 CPU kernels: use --precision float32")
        return functools.partial(ChunkedInt8(model), hidden=True) if hidden else ChunkedInt8(model)

    kw = {"return_hidden": True} if hidden else {}

    def call(idx, state, cond):
        return model(idx, state, **kw) if cond is None else model(idx, state, cond=cond, **kw)

    def forward(idx, state, cond):
        b = idx.shape[0]
        if idx.device.type != "cpu" or not 1 < b < SPLIT_BELOW:
            return call(idx, state, cond)
        # oneDNN's LSTM is slower per event at batch 2-4 than at batch 1 (measured: batch 2 ran
        # at half batch 1's events/s), so the last few files of a run go one row at a time.
        outs = [call(idx[r:r + 1], None if state is None else (state[0][:, r:r + 1], state[1][:, r:r + 1]),
                     None if cond is None else cond[r:r + 1]) for r in range(b)]
        return (torch.cat([o[0] for o in outs]),
                (torch.cat([o[1][0] for o in outs], 1), torch.cat([o[1][1] for o in outs], 1)),
                *([torch.cat([o[2] for o in outs])] if hidden else []))
    return forward


@torch.inference_mode()
def score(forward, items: Iterable[Item], *, batch_size: int, chunk: int, device="cpu",
          on_chunk: Callable[[int], None] | None = None, memory=None, proposes: slice | None = None
          ) -> Iterator[tuple[Any, float, int]]:
    """Yield (key, total nats of tokens[1:], events) for each item, in the order files finish.

    on_chunk(events) is called after each chunk with the number of real (unpadded) events scored.
    Give items longest first: the last files then run in a nearly empty batch for little time.
    memory: a memory.Memory whose cache mixes into every step (a cache per file, carried across
    its chunks like the state); forward must then return the hidden states (make_forward's hidden).
    proposes: the tokenizer's key_downs, for a cache of memory.events "notes".
    """
    cache = memory is not None and memory.cache
    if batch_size < 1 or chunk < 1:
        raise UserError(f"batch size and chunk must be positive, got {batch_size} and {chunk}")
    it = iter(items)
    rows: list[list | None] = [None] * batch_size  # [item, position, total nats]
    state = None
    exhausted = False
    while True:
        fresh = []
        for r in range(len(rows)):
            while rows[r] is None and not exhausted:
                item = next(it, None)
                if item is None:
                    exhausted = True
                elif len(item.tokens) < 2:
                    yield item.key, 0.0, 0  # nothing after BOS to score
                else:
                    rows[r] = [item, 0, 0.0, None]  # None: the file's cache history, empty
                    fresh.append(r)
        live = [r for r, row in enumerate(rows) if row is not None]
        if not live:
            return
        if len(live) < len(rows):  # no more files: drop the empty rows
            rows = [rows[r] for r in live]
            fresh = [live.index(r) for r in fresh]
            if state is not None:
                index = torch.tensor(live, device=state[0].device)
                state = tuple(s.index_select(1, index) for s in state)
        if state is not None and fresh:  # a refilled row starts from the zero state
            keep = torch.ones(len(rows), 1, device=state[0].device, dtype=state[0].dtype)
            keep[fresh] = 0
            state = tuple(s * keep for s in state)
        n = min(chunk, max(len(row[0].tokens) - 1 - row[1] for row in rows))
        inp = np.zeros((len(rows), n), np.int64)
        tgt = np.full((len(rows), n), IGNORE, np.int64)
        for r, (item, pos, *_) in enumerate(rows):
            seg = item.tokens[pos: pos + n + 1]
            inp[r, : len(seg) - 1] = seg[:-1]
            tgt[r, : len(seg) - 1] = seg[1:]
        cond = _stack_cond(rows, device)
        logits, state, *hidden = forward(torch.from_numpy(inp).to(device), state, cond)
        tgt_t = torch.from_numpy(tgt).to(device)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), tgt_t.reshape(-1), ignore_index=IGNORE, reduction="none"
        ).view(len(rows), n)
        if cache:
            nll = _with_cache(nll, logits, hidden[0], tgt_t, rows, memory, proposes)
        nll = nll.sum(1).double().cpu().numpy()
        scored = 0
        for r, row in enumerate(rows):
            item, pos, total, _ = row
            step = min(n, len(item.tokens) - 1 - pos)
            scored += step
            row[1], row[2] = pos + step, total + float(nll[r])
            if row[1] >= len(item.tokens) - 1:
                yield item.key, row[2], len(item.tokens) - 1
                rows[r] = None
        if on_chunk is not None:
            on_chunk(scored)


def _with_cache(nll, logits, hidden, tgt, rows, memory, proposes):
    """Each row's nats with its file's cache mixed in (memory.with_cache), its history carried."""
    from .memory import with_cache

    out = nll.clone()
    for r, row in enumerate(rows):
        step = int((tgt[r] != IGNORE).sum())
        if not step:
            continue
        lp, row[3] = with_cache(-nll[r, :step], logits[r, :step], hidden[r, :step], tgt[r, :step], row[3], memory, proposes)
        out[r, :step] = -lp
    return out


def _stack_cond(rows, device):
    conds = [row[0].cond for row in rows]
    if all(c is None for c in conds):
        return None
    if any(c is None for c in conds):
        raise ValueError("either every item carries a cond or none does")
    return torch.as_tensor(np.stack([np.asarray(c) for c in conds])).to(device)


class ChunkedInt8:
    """A whole-chunk forward of ComposerLSTM with int8 recurrent matmuls (CPU; fbgemm or qnnpack).

    Layer by layer like nn.LSTM, time-major: the first layer's input projection is a lookup table
    (embedding @ W_ih, biases folded in); a further layer's, and the output layer, are one matmul
    over all batch x chunk rows, in bfloat16 where the CPU has native bf16 (AMX / AVX512-BF16, an
    order of magnitude faster than float32 there, and more accurate than int8), float32 elsewhere;
    the output bias stays float32. The recurrence is one int8 matmul per step at batch width, in a
    TorchScript loop (Python's per-step overhead was most of a layer-step at batch 1).
    Accuracy: the cell-input (g) rows' int8 weights were most of the error, so those rows also
    carry their int8 residual, a second row whose scale is 1/254 of the first (+25 % recurrent
    work, a third of the error). Activations are 7-bit on fbgemm without AVX512-VNNI (its 16-bit
    pair sums could saturate), 8-bit otherwise. The output layer is never int8: that added as much
    error as a whole LSTM layer. On native-bf16 CPUs a batch at least BF16_FROM wide runs its
    recurrence in bf16 instead (faster there, a fifth of the gate error). The figures are in
    docs/benchmarks.md (Evaluation speed); bench/evaluate_speed.py measures them.
    """

    @torch.inference_mode()
    def __init__(self, model):
        self.proj = None if getattr(model, "proj", None) is None else float_linear(model.proj.weight, None)
        n, hid = model.config.num_layers, model.config.hidden_size
        w_ih, w_hh, bias, table = gate_scaled(model)  # on the CPU: make_forward checks
        self.table = table.float()
        dtype = torch.bfloat16 if _native_bf16() else torch.float32
        self.ih = [None] + [(w_ih[k].t().contiguous().to(dtype), bias[k].to(dtype)) for k in range(1, n)]
        self.hh = [int8_pack(w_hh[k], residual=slice(2 * hid, 3 * hid)) for k in range(n)]
        self.reduce_range = _reduce_range()
        self.loop = _recurrence()
        self.hh_bf16 = _bf16_pack(w_hh) if dtype == torch.bfloat16 else None
        self.loop_bf16 = _recurrence_bf16() if self.hh_bf16 is not None else None
        self._scratch: dict[str, torch.Tensor] = {}
        self.head_w = model.head.weight.detach().float().cpu().t().contiguous().to(dtype)
        # the bias stays float32: rounded to bf16 it would shift every event's logits alike
        self.head_b = model.head.bias.detach().float().cpu()
        self.layers, self.hidden = n, hid
        self.model, self.w_ih0 = model, w_ih[0]  # for style conditions
        # No conditions asked (evaluate's usual case) is all "any": those terms are constants, so
        # they go into the table and the output bias once instead of into every chunk.
        self.table_any, self.head_b_any = self.table, self.head_b
        if getattr(model, "cond_embed", None):
            any_ = torch.zeros(1, len(model.cond_embed), dtype=torch.long)
            gates, logit_bias = condition_terms(model, self.w_ih0, any_)
            self.table_any = self.table + gates.float().view(1, -1)
            if logit_bias is not None:
                self.head_b_any = self.head_b + logit_bias.float().view(-1)

    def _buffer(self, name: str, shape: tuple, dtype=torch.float32) -> torch.Tensor:
        """A reused scratch tensor: fresh multi-MB tensors cost page faults on first touch (writing
        step rows into a new batch-20 chunk took 14 us a row against 4.6 us into a reused one)."""
        n = int(np.prod(shape))
        flat = self._scratch.get(name)
        if flat is None or flat.numel() < n or flat.dtype != dtype:
            flat = self._scratch[name] = torch.empty(n, dtype=dtype)
        return flat[:n].view(shape)

    @torch.inference_mode()
    def __call__(self, idx, state, cond=None, hidden: bool = False):
        b, t = idx.shape
        hid = self.hidden
        if state is None:
            state = (torch.zeros(self.layers, b, hid), torch.zeros(self.layers, b, hid))
        conds = getattr(self.model, "cond_embed", None)
        if cond is not None and not conds:
            raise ValueError("this model takes no conditions")
        gates_in = self._buffer("table", (t, b, 4 * hid))
        table, head_b = (self.table, self.head_b) if cond is not None else (self.table_any, self.head_b_any)
        torch.index_select(table, 0, idx.t().reshape(-1), out=gates_in.view(t * b, 4 * hid))
        cond_bias = None
        if cond is not None:  # as forward(): the condition embeddings join the input, each row its own
            gates, cond_bias = condition_terms(self.model, self.w_ih0, cond.view(b, 1, -1))
            gates_in += gates.float().view(1, b, 4 * hid)
        hs, cs, out = [], [], None
        for k in range(self.layers):
            if k:
                w_ih, b_ih = self.ih[k]
                gates_in = self._buffer("gates", (t, b, 4 * hid), w_ih.dtype)  # the loop adds bf16 as is
                torch.addmm(b_ih, out.view(t * b, hid).to(w_ih.dtype), w_ih, out=gates_in.view(t * b, 4 * hid))
            out = self._buffer(f"out{k % 2}", (t, b, hid))  # layer k reads the other one
            h0, c0 = state[0][k].contiguous(), state[1][k].contiguous()
            if self.hh_bf16 is not None and b >= BF16_FROM:
                h, c = self.loop_bf16(gates_in, h0, c0, self.hh_bf16[k], out)
            else:
                h, c = self.loop(gates_in, h0, c0, self.hh[k], self.reduce_range, out)
            hs.append(h)
            cs.append(c)
        x = out.transpose(0, 1).reshape(b * t, hid)
        if self.proj is not None:
            x = self.proj(x)
        logits = torch.mm(x.to(self.head_w.dtype), self.head_w).float().add_(head_b).view(b, t, -1)
        if cond_bias is not None:  # and their logit biases, as forward()
            logits = logits + cond_bias.float()
        if hidden:  # a copy: `out` is a scratch buffer the next call overwrites
            return logits, (torch.stack(hs), torch.stack(cs)), out.transpose(0, 1).clone()
        return logits, (torch.stack(hs), torch.stack(cs))


def _recurrence_py(gates_in: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                   packed: torch.classes.quantized.LinearPackedParamsBase,
                   reduce_range: bool, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM layer over a time-major chunk: gates_in [T, B, 4H] (float32 or bf16; the residual
    rows' output [B, H] joins the g gate) -> out [T, B, H] filled in, and the last (h, c)."""
    t, hid = gates_in.shape[0], h.shape[1]
    for s in range(t):
        y = torch.ops.quantized.linear_dynamic(h, packed, reduce_range)
        g = y[:, :4 * hid] + gates_in[s]
        g[:, 2 * hid:3 * hid] += y[:, 4 * hid:]
        # the cell, inline: a shared scripted cell function cost ~1 us more a layer-step at batch 1
        # (29.8 -> 30.9 us, three interleaved runs), so _recurrence_bf16_py repeats these lines
        g.sigmoid_()  # the g rows are doubled (gate_scaled): tanh(x) = 2 sigmoid(2x) - 1
        i, f, gg, o = g.chunk(4, 1)
        c = torch.addcmul(f * c - i, i, gg, value=2.0)  # f c + i tanh(x)
        h = o * torch.tanh(c)
        out[s] = h
    return h, c


def _scripted(loop, probe):
    """loop compiled by TorchScript, or loop itself where this PyTorch cannot script or run it
    (probe(compiled) runs it once: compiling is not enough)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = torch.jit.script(loop)
            probe(compiled)
            return compiled
    except Exception:
        return loop


@functools.cache
def _recurrence():
    packed = int8_pack(torch.ones(8, 2), residual=slice(4, 6))
    return _scripted(_recurrence_py, lambda f: f(torch.zeros(2, 1, 8), torch.zeros(1, 2), torch.zeros(1, 2),
                                                 packed, _reduce_range(), torch.empty(2, 1, 2)))


def _recurrence_bf16_py(gates_in: torch.Tensor, h: torch.Tensor, c: torch.Tensor, packed: torch.Tensor,
                        out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As _recurrence_py, the recurrent matmul in bf16 on oneDNN-packed weights (_bf16_pack)."""
    t = gates_in.shape[0]
    scalars: List[Optional[Union[int, float, complex]]] = []  # TorchScript's Scalar?[]
    for s in range(t):
        g = torch.ops.mkldnn._linear_pointwise(h.to(torch.bfloat16), packed, None, "none", scalars, "")
        g = g.float().add_(gates_in[s])
        g.sigmoid_()  # the cell as in _recurrence_py
        i, f, gg, o = g.chunk(4, 1)
        c = torch.addcmul(f * c - i, i, gg, value=2.0)
        h = o * torch.tanh(c)
        out[s] = h
    return h, c


def _bf16_pack(w_hh) -> list | None:
    """Each layer's recurrent weights in oneDNN's blocked bf16 layout (packed once: an unpacked
    bf16 mm re-packs its 2 MB weight on every call, ~180 us at any batch), or None without it."""
    try:
        packed = [torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16), 64) for w in w_hh]
        h = torch.zeros(1, w_hh[0].shape[1], dtype=torch.bfloat16)
        torch.ops.mkldnn._linear_pointwise(h, packed[0], None, "none", [], "")
        return packed
    except Exception:
        return None


@functools.cache
def _recurrence_bf16():
    packed = _bf16_pack([torch.ones(8, 2)])
    if packed is None:
        return _recurrence_bf16_py
    return _scripted(_recurrence_bf16_py, lambda f: f(torch.zeros(2, 1, 8), torch.zeros(1, 2), torch.zeros(1, 2),
                                                      packed[0], torch.empty(2, 1, 2)))


def _cpu_has(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes: absent in some builds, so ask softly
    try:
        return bool(probe()) if probe is not None else False
    except Exception:
        return False


def _native_bf16() -> bool:
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False  # without oneDNN a bf16 addmm falls to a reference kernel (measured ~500x slower)
    return _cpu_has("_is_amx_tile_supported") or _cpu_has("_is_avx512_bf16_supported")


def _reduce_range() -> bool:
    return torch.backends.quantized.engine in ("fbgemm", "x86") and not _cpu_has("_is_vnni_supported")
