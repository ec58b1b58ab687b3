"""Decoding helpers on a trained ComposerLSTM: the one-step decoder that generation runs
(StepDecoder, float32 or int8 matmuls), the condition terms the decoders fold in, and the int8 /
float linear builders that the batched int8 scorer (scoring.py) shares."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model import ComposerLSTM


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
        n = model.config.num_layers
        w_ih, w_hh, bias, self.table = gate_scaled(model)
        linear = _int8_linear if int8 else float_linear
        self.hh0 = linear(w_hh[0], None)
        self.layers = [linear(torch.cat([w_ih[k], w_hh[k]], 1), bias[k]) for k in range(1, n)]
        self.proj = None if model.proj is None else float_linear(model.proj.weight, None)
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


def step_decoder(model: ComposerLSTM, int8: bool = False) -> StepDecoder:
    """StepDecoder(model, int8=int8), or the one keep_decoders(model) kept for that precision."""
    kept = getattr(model, "_kept_decoders", None)
    if kept is None:
        return StepDecoder(model, int8=int8)
    if int8 not in kept:
        kept[int8] = StepDecoder(model, int8=int8)
    return kept[int8]


def keep_decoders(model: ComposerLSTM) -> None:
    """From now on step_decoder(model, ...) builds each precision's decoder once instead of per
    piece: for a model that no longer trains (the studio's), a decoder being a copy of the weights
    re-arranged (and for int8 quantized) when it is built."""
    model._kept_decoders = {}


def gate_scaled(model: ComposerLSTM):
    """The LSTM's weights as both decoders use them: (w_ih, w_hh, bias) per layer with the
    cell-input gate's rows doubled (tanh(x) = 2 sigmoid(2x) - 1: one sigmoid for all four gates;
    gate order input, forget, cell, output), and the first layer's input projection as a table
    [vocab, 4H] (embedding @ W_ih, biases folded in)."""
    lstm, n, hid = model.lstm, model.config.num_layers, model.config.hidden_size
    double_g = torch.ones(4 * hid, 1, device=model.head.weight.device)
    double_g[2 * hid:3 * hid] = 2.0
    bias = [(getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")) * double_g[:, 0] for k in range(n)]
    w_ih = [getattr(lstm, f"weight_ih_l{k}") * double_g for k in range(n)]
    w_hh = [getattr(lstm, f"weight_hh_l{k}") * double_g for k in range(n)]
    return w_ih, w_hh, bias, torch.addmm(bias[0], model.embed.weight, w_ih[0].t())


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


def float_linear(weight, bias):
    """x @ weight.T + bias, or + `add` in its place (the first layer's table row), as one addmm."""
    w = weight.t().contiguous()
    b = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device) if bias is None else bias
    return lambda x, add=None: torch.addmm(b if add is None else add, x, w)


def _int8_linear(weight, bias):
    """The same with int8 weights, one scale per output row (symmetric, so no zero points)."""

    packed = int8_pack(weight, bias)
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


def int8_pack(weight: torch.Tensor, bias: torch.Tensor | None = None, residual=None):
    """fbgemm/qnnpack packed int8 weights, one scale per output row (symmetric, so no zero points).
    residual (rows, as a slice or index): those rows' rounding error, quantized again with its own
    scales, appended as extra output rows, which the caller adds back to the first rows' outputs."""
    import warnings

    def quantize(w):
        scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
        return torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)

    w = weight.detach().float().cpu()
    with warnings.catch_warnings():  # PyTorch plans to move these to torchao; int8_available() checks
        warnings.simplefilter("ignore")
        qw = quantize(w)
        if residual is not None:
            q2 = quantize((w - qw.dequantize())[residual])
            scales = torch.cat([qw.q_per_channel_scales(), q2.q_per_channel_scales()])
            qw = torch._make_per_channel_quantized_tensor(torch.cat([qw.int_repr(), q2.int_repr()]), scales,
                                                          torch.zeros(len(scales), dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float().cpu())
