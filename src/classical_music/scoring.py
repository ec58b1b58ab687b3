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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .model import condition_terms

IGNORE = -100  # cross_entropy's ignore_index: the padded tail of a row whose file ended mid-chunk

# Batch x chunk per device. CPU: the recurrent matmuls reach most of their speed by batch 64
# (batch 1: ~1,800 events/s, batch 64: ~4,000 on one core, float32), and a chunk of 256 wastes at
# most 255 padded steps per file end (~2 % for 7,000-event files). GPU: wide enough to fill it.
DEFAULTS = {"cpu": (64, 256), "cuda": (256, 512)}
PRECISIONS = ("float32", "int8")
SPLIT_BELOW = 8  # float32 on CPU: narrower batches run row by row (see make_forward)


@dataclass
class Item:
    key: Any  # returned with the file's total
    tokens: np.ndarray  # the whole file, BOS first; tokens[1:] are scored
    cond: Any = None  # per-file extra input for the forward (array-like), or None


def defaults(device) -> tuple[int, int]:
    return DEFAULTS["cpu" if torch.device(device).type == "cpu" else "cuda"]


def make_forward(model, precision: str = "float32", device="cpu") -> Callable:
    """forward(idx [B, T], state | None, cond | None) -> (logits [B, T, V], (h, c) [layers, B, H])."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        if torch.device(device).type != "cpu":
            raise UserError("--precision int8 runs on the CPU only: use float32 on a GPU")
        from .model import int8_available

        if not int8_available():
            raise UserError("this PyTorch has no int8 CPU kernels: use --precision float32")
        return ChunkedInt8(model)

    def call(idx, state, cond):
        return model(idx, state) if cond is None else model(idx, state, cond=cond)

    def forward(idx, state, cond):
        b = idx.shape[0]
        if idx.device.type != "cpu" or not 1 < b < SPLIT_BELOW:
            return call(idx, state, cond)
        # oneDNN's LSTM is slower per event at batch 2-4 than at batch 1 (measured: batch 2 ran
        # at half batch 1's events/s), so the last few files of a run go one row at a time.
        outs = [call(idx[r:r + 1], None if state is None else (state[0][:, r:r + 1], state[1][:, r:r + 1]),
                     None if cond is None else cond[r:r + 1]) for r in range(b)]
        return (torch.cat([o[0] for o in outs]),
                (torch.cat([o[1][0] for o in outs], 1), torch.cat([o[1][1] for o in outs], 1)))
    return forward


@torch.inference_mode()
def score(forward, items: Iterable[Item], *, batch_size: int, chunk: int, device="cpu",
          on_chunk: Callable[[int], None] | None = None) -> Iterator[tuple[Any, float, int]]:
    """Yield (key, total nats of tokens[1:], events) for each item, in the order files finish.

    on_chunk(events) is called after each chunk with the number of real (unpadded) events scored.
    Give items longest first: the last files then run in a nearly empty batch for little time.
    """
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
                    rows[r] = [item, 0, 0.0]
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
        for r, (item, pos, _) in enumerate(rows):
            seg = item.tokens[pos: pos + n + 1]
            inp[r, : len(seg) - 1] = seg[:-1]
            tgt[r, : len(seg) - 1] = seg[1:]
        cond = _stack_cond(rows, device)
        logits, state = forward(torch.from_numpy(inp).to(device), state, cond)
        tgt_t = torch.from_numpy(tgt).to(device)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), tgt_t.reshape(-1), ignore_index=IGNORE, reduction="none"
        ).view(len(rows), n).sum(1).double().cpu().numpy()
        scored = 0
        for r, row in enumerate(rows):
            item, pos, total = row
            step = min(n, len(item.tokens) - 1 - pos)
            scored += step
            row[1], row[2] = pos + step, total + float(nll[r])
            if row[1] >= len(item.tokens) - 1:
                yield item.key, row[2], len(item.tokens) - 1
                rows[r] = None
        if on_chunk is not None:
            on_chunk(scored)


def _stack_cond(rows, device):
    conds = [row[0].cond for row in rows]
    if all(c is None for c in conds):
        return None
    if any(c is None for c in conds):
        raise ValueError("either every item carries a cond or none does")
    return torch.as_tensor(np.stack([np.asarray(c) for c in conds])).to(device)


class ChunkedInt8:
    """A whole-chunk forward of ComposerLSTM with int8 LSTM matmuls (CPU; fbgemm or qnnpack).

    Layer by layer like nn.LSTM: the first layer's input projection is a lookup table (embedding
    @ W_ih, biases folded in), a further layer's is one int8 matmul over all batch x chunk rows,
    and the recurrence is one int8 matmul per step at batch width; the cell is StepDecoder's. The
    output layer stays float32: it is 4 % of the work but quantizing it added as much error as a
    whole LSTM layer's matmuls (shipped model, 12 valid files: +0.0007 nats/event of the +0.0018
    with everything int8). bench/evaluate_speed.py measures the difference on real files.
    """

    @torch.inference_mode()
    def __init__(self, model):
        from .model import _float_linear, _int8_linear

        if getattr(model, "proj", None) is not None:
            self.proj = _float_linear(model.proj.weight, None)
        else:
            self.proj = None
        lstm, n, hid = model.lstm, model.config.num_layers, model.config.hidden_size
        double_g = torch.ones(4 * hid, 1)
        double_g[2 * hid:3 * hid] = 2.0  # tanh(x) = 2 sigmoid(2x) - 1: one sigmoid for all gates
        w = {name: p.detach().float().cpu() for name, p in lstm.named_parameters()}
        bias = [(w[f"bias_ih_l{k}"] + w[f"bias_hh_l{k}"]) * double_g[:, 0] for k in range(n)]
        self.table = torch.addmm(bias[0], model.embed.weight.detach().float().cpu(), (w["weight_ih_l0"] * double_g).t())
        self.ih = [None] + [_int8_linear(w[f"weight_ih_l{k}"] * double_g, bias[k]) for k in range(1, n)]
        self.hh = [_int8_linear(w[f"weight_hh_l{k}"] * double_g, None) for k in range(n)]
        self.head = _float_linear(model.head.weight.detach().float().cpu(), model.head.bias.detach().float().cpu())
        self.layers, self.hidden = n, hid
        self.model, self.w_ih0 = model, w["weight_ih_l0"] * double_g  # for style conditions

    @torch.inference_mode()
    def __call__(self, idx, state, cond=None):
        b, t = idx.shape
        hid = self.hidden
        if state is None:
            state = (torch.zeros(self.layers, b, hid), torch.zeros(self.layers, b, hid))
        hs, cs = [], []
        gates_in = self.table.index_select(0, idx.reshape(-1)).view(b, t, 4 * hid)
        conds = getattr(self.model, "cond_embed", None)
        cond_bias = None
        if conds:  # as forward(): the condition embeddings join the input (none asked = all "any")
            if cond is None:
                cond = torch.zeros(b, len(conds), dtype=torch.long)
            cond = cond.view(b, 1, -1) if cond.dim() == 2 else cond
            gates, cond_bias = condition_terms(self.model, self.w_ih0, cond)
            gates_in = gates_in + gates.float()
        elif cond is not None:
            raise ValueError("this model takes no conditions")
        out = None
        for k in range(self.layers):
            if k:
                gates_in = self.ih[k](out.reshape(b * t, hid)).view(b, t, 4 * hid)
            out = torch.empty(b, t, hid)
            h, c = state[0][k], state[1][k]
            for s in range(t):
                i, f, g, o = torch.sigmoid(self.hh[k](h, gates_in[:, s])).chunk(4, 1)
                c = torch.addcmul(f * c - i, i, g, value=2.0)  # f c + i tanh(x)
                h = o * torch.tanh(c)
                out[:, s] = h
            hs.append(h)
            cs.append(c)
        x = out.reshape(b * t, hid)
        if self.proj is not None:
            x = self.proj(x)
        logits = self.head(x).view(b, t, -1)
        if cond_bias is not None:  # and their logit biases, as forward()
            logits = logits + cond_bias.float()
        return logits, (torch.stack(hs), torch.stack(cs))
