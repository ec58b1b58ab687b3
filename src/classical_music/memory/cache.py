"""The cache's arithmetic: exact in the batched scorer (cache_logprob, with_cache) and one step at
a time in the sampler (StepCache), for the state recall and the motifs recall alike."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError
from .motifs import Motifs, motif_logprob
from .settings import Memory

RECENT_KEYS = 8  # the register a recalled pitch is held near: the piece's last 8 key-downs (both hands)
BLOCK = 512  # queries per block in cache_logprob: its scores are BLOCK x (size + BLOCK) floats


def key_downs(tokenizer) -> slice | None:
    """The tokenizer's key-down ids, what a cache of events "notes" proposes from; None without them."""
    ids = getattr(tokenizer, "key_downs", None)
    return ids if ids is not None and ids.stop > ids.start else None


def _proposed(memory: Memory, proposes: slice | None) -> slice | None:
    """The ids the cache proposes from: `proposes` for events "notes" (refused without), None for all."""
    if memory.events != "notes":
        return None
    if proposes is None or proposes.stop <= proposes.start:
        raise UserError("--memory_events notes needs a tokenizer with key-down events")
    return proposes


# -- the cache in scoring: exact, per file, a block of queries at a time ---------------------------


def cache_logprob(hidden: torch.Tensor, nxt: torch.Tensor, hist, theta: float, size: int, gap: int = 0,
                  proposes: slice | None = None):
    """log p_cache(next event) for each step of one file's chunk, and the history to carry on.

    hidden [t, H]: the top layer's output at the chunk's steps; nxt [t]: the event after each (the
    target). hist: (keys [m, H], next events [m]) of the file's last m <= size earlier steps, or
    None at the file's start. Step q's cache holds the `size` steps before it, this chunk's earlier
    steps included, less the newest `gap`; with `proposes` (an id range) only the steps followed by
    one of those ids. Returns (log p [t] float32: -inf where no stored event matches, nan where the
    cache has nothing to say, i.e. it is empty or the target lies outside `proposes`), and the new
    history (copies, at most size rows).
    """
    keys, ys = (hidden[:0], nxt[:0]) if hist is None else hist
    m, t = len(keys), len(hidden)
    all_k = torch.cat([keys, hidden]).float()
    all_y = torch.cat([ys, nxt])
    out = torch.empty(t, dtype=torch.float32, device=hidden.device)
    inside = None if proposes is None else (all_y >= proposes.start) & (all_y < proposes.stop)
    for q0 in range(0, t, BLOCK):
        q1 = min(t, q0 + BLOCK)
        lo = max(0, m + q0 - size)  # the earliest key any query of this block may see
        k, y = all_k[lo:m + q1], all_y[lo:m + q1]
        s = (hidden[q0:q1].float() @ k.t()) * theta  # [b, keys]
        pos = torch.arange(m + q0, m + q1, device=s.device).unsqueeze(1) - lo  # each query's own index in k
        j = torch.arange(len(k), device=s.device).unsqueeze(0)
        allowed = (j < pos - gap) & (j >= pos - size)
        if inside is not None:
            allowed &= inside[lo:m + q1].unsqueeze(0)
        s = s.masked_fill(~allowed, -math.inf)
        hit = y.unsqueeze(0) == nxt[q0:q1].unsqueeze(1)
        out[q0:q1] = torch.logsumexp(s.masked_fill(~hit, -math.inf), 1) - torch.logsumexp(s, 1)
    if inside is not None:
        out[~inside[m:]] = math.nan
    keep = max(0, m + t - size)
    return out, (all_k[keep:].clone(), all_y[keep:].clone())


def mix(logp_model: torch.Tensor, logp_cache: torch.Tensor, lam: float, log_share: torch.Tensor | None = None) -> torch.Tensor:
    """log((1 - lam) p_model + lam share p_cache), elementwise; p_model alone where the cache is
    empty (nan). log_share: the model's log-probability of the class the cache proposes from (the
    key-downs, for events "notes"), None for a cache over all events (share 1)."""
    if lam <= 0:
        return logp_model
    if log_share is not None:
        logp_cache = logp_cache + log_share
    if lam >= 1 and log_share is None:
        return torch.where(torch.isnan(logp_cache), logp_model, logp_cache)
    mixed = torch.logaddexp(logp_model + math.log1p(-lam) if lam < 1 else torch.full_like(logp_model, -math.inf),
                            logp_cache + math.log(lam))
    return torch.where(torch.isnan(logp_cache), logp_model, mixed)


def with_cache(logp_model: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor, nxt: torch.Tensor, hist,
               memory: Memory, proposes: slice | None = None):
    """One file's chunk scored with its cache: (log p of each target [t], the history to carry).
    logits [t, V], hidden [t, H] and nxt [t] as the forward gave them; proposes: the tokenizer's
    key_downs, needed for events "notes"."""
    if memory.register:
        raise UserError("--memory_register is for composing only: scoring has no register weight")
    proposes = _proposed(memory, proposes)
    if memory.recall == "motifs":
        lp_cache, hist = motif_logprob(nxt, hist, memory.size, memory.gap, proposes)
    else:
        lp_cache, hist = cache_logprob(hidden, nxt, hist, memory.theta, memory.size, memory.gap, proposes)
    share = None
    if proposes is not None:
        lf = logits.float()
        share = torch.logsumexp(lf[:, proposes], -1) - torch.logsumexp(lf, -1)
    return mix(logp_model, lp_cache, memory.lam, share), hist


# -- the cache in sampling: a ring of the last `size` steps per piece -------------------------------


class StepCache:
    """The cache of each piece being sampled, one step at a time, in NumPy.

    Each row keeps its stored steps in event order in a buffer of size + spare (compacted when full),
    with the step each was taken at, so a query sees the stored steps from `size` events back up to
    `gap` events back as one contiguous slice. With memory.events "notes" only the steps followed
    by a key-down (the tokenizer's key_downs) are stored: the cache then proposes pitches only,
    and its mixture stays inside the key-down class (the model's timing and loudness untouched).
    NumPy, not torch: per step the product and the scatter run per row, the mixture for all rows
    at once, ~40 us at batch 1 where torch's calls took ~80 us (docs/benchmarks.md).
    """

    SPARE_MIN = 512  # rows a buffer holds beyond size: a compaction (size rows moved) every spare pushes

    def __init__(self, memory: Memory, rows: int, hidden: int, vocab: int, device="cpu", proposes: slice | None = None):
        self.theta, self.lam, self.size, self.gap, self.vocab = memory.theta, memory.lam, memory.size, memory.gap, vocab
        self.proposes = _proposed(memory, proposes)
        self.first, width = (0, vocab) if self.proposes is None else (self.proposes.start, self.proposes.stop - self.proposes.start)
        self.width = width
        self.motifs = [Motifs() for _ in range(rows)] if memory.recall == "motifs" else None
        cap = 0 if self.motifs else memory.size + max(self.SPARE_MIN, memory.size // 4)
        self.keys = np.zeros((rows, cap, hidden), np.float32)
        self.at = np.zeros((rows, cap), np.int64)  # the step each stored row was taken at
        self.next = np.zeros((rows, cap), np.int64)  # the event after it, from self.first
        self.used = [0] * rows
        self.count = 0  # steps pushed (the same for every row)
        self.pending = None  # the last step's hidden state, waiting for the event drawn after it
        self.sigma = memory.register if self.proposes is not None else 0.0
        self.recent = np.full((rows, RECENT_KEYS), -1000.0)  # each row's last key-downs (from self.first)

    def push_many(self, hidden: torch.Tensor, nxt: torch.Tensor) -> None:
        """hidden [rows, T, H] at T steps with the event after each [rows, T] (a primer, chunk by
        chunk); a step whose next event is not known yet (-1, the primer's last) is left pending."""
        known = int((nxt[0] >= 0).sum())
        h, y = hidden.float().cpu().numpy(), nxt.cpu().numpy()
        skip = max(0, known - self.size)  # older ones would fall out of the window anyway
        self.count += skip
        for k in range(skip, known):
            self._put(h[:, k], y[:, k])
        if known < hidden.shape[1]:
            self.pending = hidden[:, known]

    def _put(self, h: np.ndarray, tok: np.ndarray) -> None:
        for r, t in enumerate(tok.tolist()):
            t -= self.first
            if not 0 <= t < self.width:
                continue
            if self.proposes is not None:
                self._heard(r, t)
            if self.motifs is not None:
                self.motifs[r].add(t, self.count)
                continue
            u = self.used[r]
            if u == self.at.shape[1]:  # full: keep the newest `size` (older ones are out of the window)
                n = self.size
                self.keys[r, :n], self.at[r, :n], self.next[r, :n] = self.keys[r, u - n:u], self.at[r, u - n:u], self.next[r, u - n:u]
                u = n
            self.keys[r, u], self.at[r, u], self.next[r, u] = h[r], self.count, t
            self.used[r] = u + 1
        self.count += 1

    def _heard(self, r: int, pitch: int) -> None:
        self.recent[r, 1:] = self.recent[r, :-1]
        self.recent[r, 0] = pitch

    def observe(self, tok: torch.Tensor) -> None:
        """The event drawn after the pending state: that pair joins the cache."""
        if self.pending is not None:
            self._put(self.pending.float().cpu().numpy(), tok.cpu().numpy())
            self.pending = None

    def window(self, r: int) -> tuple[int, int]:
        """Row r's stored steps that the next query sees: taken size..gap+1 steps before it."""
        at = self.at[r, :self.used[r]]
        return int(at.searchsorted(self.count - self.size)), int(at.searchsorted(self.count - self.gap))

    def mix(self, logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """logits [rows, V] at the step whose top-layer output is hidden [rows, H] -> the mixture's
        log-probabilities [rows, V] (on the CPU); hidden waits for its next event (observe)."""
        self.pending = hidden
        if self.lam <= 0 or self.count == 0:
            return logits
        rows = len(self.used)
        q = hidden.float().cpu().numpy() * self.theta if self.motifs is None else None
        c = np.zeros((rows, self.width))  # each row's cache distribution over what it proposes
        found = np.zeros((rows, 1))
        for r in range(rows):
            if self.motifs is not None:
                got = self.motifs[r].propose(self.count, self.size, self.gap, self.width)
                if got is not None:
                    c[r], found[r] = got, 1
                continue
            lo, hi = self.window(r)
            if lo < hi:
                s = self.keys[r, lo:hi] @ q[r]
                np.exp(s - s.max(), out=s)
                c[r] = np.bincount(self.next[r, lo:hi], s, minlength=self.width)
                c[r] /= c[r].sum()
                found[r] = 1
        if not found.any():
            return logits
        z = logits.float().cpu().numpy().astype(np.float64)
        z -= z.max(1, keepdims=True)
        z -= np.log(np.exp(z).sum(1, keepdims=True))  # log p_model
        if self.proposes is None:
            mixed = np.exp(z) * (1 - self.lam * found) + self.lam * c
            with np.errstate(divide="ignore"):
                return torch.from_numpy(np.log(mixed).astype(np.float32))
        sl = self.proposes
        ps = np.exp(z[:, sl])
        if self.sigma > 0:
            d = np.abs(np.arange(self.width)[None, :, None] - self.recent[:, None, :]).min(2)
            c *= np.exp(-0.5 * (d / self.sigma) ** 2)
            found = c.sum(1, keepdims=True)
        share = ps.sum(1, keepdims=True)  # within the key-down class: its total is the model's
        with np.errstate(divide="ignore"):
            z[:, sl] = np.log(ps * (1 - self.lam * found) + self.lam * share * c)
        return torch.from_numpy(z.astype(np.float32))
