"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals, ICML 2018): the weights adapt to the
piece being scored. Each file is cut into segments of `memory.segment` events; a segment is first
scored with the current weights (the LSTM state carried from the previous one, as `evaluate` does),
then the model takes one SGD step on that segment's loss, so later segments are scored by a model
that has seen the piece so far. Every event is scored before any step has learnt from it. The
weights (and the optimizer, plain SGD without state) are restored after each file, so a file's
score never depends on the files scored before it.

With memory.cache too ("both"), the cache over the adapting model's hidden states mixes into each
step (memory.cache_logprob), and the gradient step is on the model's own loss, not the mixture's.
One file at a time (a batch row per file would need its own weights): a step costs a forward and
a backward pass, in float32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from .memory import Memory, key_downs, with_cache


def file_nats(model, tokens: np.ndarray, memory: Memory, cond=None, device="cpu",
              on_segment: Callable[[int], None] | None = None) -> float:
    """Total nats of tokens[1:] under dynamic evaluation; the model's weights are as before after.
    on_segment(events) is called after each segment."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    x = torch.as_tensor(np.asarray(tokens, np.int64), device=device).unsqueeze(0)
    kw = {} if cond is None else {"cond": torch.as_tensor(np.asarray(cond), device=device).view(1, -1)}
    was_training = model.training
    model.eval()  # no dropout: the step adapts the function evaluate scores
    total, state, hist = 0.0, None, None
    try:
        for s in range(0, x.shape[1] - 1, memory.segment):
            inp, tgt = x[:, s:s + memory.segment], x[:, s + 1:s + memory.segment + 1]
            inp = inp[:, :tgt.shape[1]]
            with torch.enable_grad():
                logits, state, hidden = model(inp, state, return_hidden=True, **kw)
                nll = torch.nn.functional.cross_entropy(logits[0].float(), tgt[0], reduction="none")
                grads = torch.autograd.grad(nll.mean(), params, allow_unused=True)
            lp = -nll.detach()
            if memory.cache:
                lp, hist = with_cache(lp, logits[0].detach(), hidden[0].detach(), tgt[0], hist, memory,
                                      key_downs(getattr(model, "tokenizer", None)))
            total -= float(lp.double().sum())
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(g, alpha=memory.lr)
            state = tuple(v.detach() for v in state)
            if on_segment is not None:
                on_segment(tgt.shape[1])
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
        model.train(was_training)
    return total


def score(model, items: Iterable, memory: Memory, device="cpu",
          on_chunk: Callable[[int], None] | None = None) -> Iterator[tuple]:
    """Yield (key, total nats, events) for each scoring.Item, one file at a time, on a copy of the
    model (the caller's weights are never touched, so lanes can share it)."""
    own = copy.deepcopy(model)
    for item in items:
        n = len(item.tokens) - 1
        nats = file_nats(own, item.tokens, memory, item.cond, device, on_chunk) if n > 0 else 0.0
        yield item.key, nats, n
