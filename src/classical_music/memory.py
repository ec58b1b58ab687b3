"""Memory of the piece: what the model may use of the piece's own past beyond its LSTM state.

* cache: the continuous cache of Grave, Joulin & Usunier (ICLR 2017). The top LSTM layer's output
  h_i at each of the last ``size`` events is kept with the event that followed it; the next event's
  distribution is p = (1 - lam) p_model + lam p_cache, where p_cache(w) is proportional to the sum
  of exp(theta h_t . h_i) over the stored i whose next event was w. Nothing is trained: theta, lam
  and size are tuned on valid pieces (`classical-music tune-memory`) and stored in a checkpoint's
  config.json as a ``memory`` block.
* dynamic: dynamic evaluation (Krause et al., ICML 2018, classical_music.dynamic): after each
  segment of a piece, one gradient step on that segment, the weights restored after each file.
* both: the two together (the cache holds the adapting model's states).

The scorer (scoring.score) and the sampler (generate.sampling.sample) call into this module; the
cache's arithmetic runs in float32 on whatever hidden states the forward gives (int8's included).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from .errors import UserError

MODES = ("none", "cache", "dynamic", "both")
# Used when a checkpoint's config.json has no `memory` block (tune-memory writes one).
DEFAULT_THETA, DEFAULT_LAM, DEFAULT_SIZE = 0.1, 0.1, 2000
DEFAULT_LR, DEFAULT_SEGMENT = 0.05, 128  # SGD on the mean loss: 0.03-0.1 gained most on two valid files, 0.3 diverged
MAX_SIZE = 100_000  # the cache is size x hidden floats per file or piece: 100,000 x 512 is 205 MB
BLOCK = 512  # queries per block in cache_logprob: its scores are BLOCK x (size + BLOCK) floats


@dataclass(frozen=True)
class Memory:
    mode: str = "none"
    theta: float = DEFAULT_THETA  # the cache's sharpness: exp(theta h_t . h_i)
    lam: float = DEFAULT_LAM  # the cache's share of the mixture
    size: int = DEFAULT_SIZE  # events kept
    lr: float = DEFAULT_LR  # dynamic evaluation's SGD step
    segment: int = DEFAULT_SEGMENT  # events between two dynamic steps

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"--memory must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.theta) and self.theta >= 0):
            raise UserError(f"--memory_theta must be a number >= 0, got {self.theta}")
        if not 0 <= self.lam <= 1:
            raise UserError(f"--memory_lambda must be in [0, 1], got {self.lam}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_SIZE:
            raise UserError(f"--memory_size must be an integer in 1 ... {MAX_SIZE:,}, got {self.size!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise UserError(f"--memory_lr must be a number >= 0, got {self.lr}")
        if isinstance(self.segment, bool) or not isinstance(self.segment, int) or self.segment < 1:
            raise UserError(f"--memory_segment must be a positive integer, got {self.segment!r}")

    @property
    def cache(self) -> bool:
        return self.mode in ("cache", "both")

    @property
    def dynamic(self) -> bool:
        return self.mode in ("dynamic", "both")

    def describe(self) -> dict:
        """What evaluate's JSON records: the mode and the parameters it used."""
        d = {"mode": self.mode}
        if self.cache:
            d.update(theta=self.theta, lambda_=self.lam, size=self.size)
        if self.dynamic:
            d.update(lr=self.lr, segment=self.segment)
        return {("lambda" if k == "lambda_" else k): v for k, v in d.items()}


def stored(model) -> dict:
    """The checkpoint's tuned `memory` block (config.json), or {}."""
    block = (getattr(model, "checkpoint_config", None) or {}).get("memory")
    return block if isinstance(block, dict) else {}


def resolve(model, mode: str | None, theta=None, lam=None, size=None, lr=None, segment=None) -> Memory:
    """The memory a run uses: the flags given, else the checkpoint's tuned block, else the defaults.
    mode None takes the block's `default` mode (none where the checkpoint has no block)."""
    block = stored(model)
    keys = {"theta": "theta", "lam": "lambda", "size": "size", "lr": "lr", "segment": "segment"}
    base = {k: block[v] for k, v in keys.items()
            if isinstance(block.get(v), (int, float)) and not isinstance(block.get(v), bool)}
    for k in ("size", "segment"):  # JSON may spell 2000 as 2000.0; Memory checks the value itself
        if k in base and float(base[k]).is_integer():
            base[k] = int(base[k])
    given = {k: v for k, v in dict(theta=theta, lam=lam, size=size, lr=lr, segment=segment).items() if v is not None}
    mode = mode if mode is not None else block.get("default", "none")
    return Memory(mode=mode, **(base | given))


# Composing uses the cache only: dynamic evaluation would take gradient steps on the model's own
# samples (a checkpoint whose default is dynamic or both composes with none or the cache).
COMPOSING_MODES = ("none", "cache")


def composing(model, mode: str | None, theta=None, lam=None, size=None) -> Memory:
    """The memory a piece is composed with: as resolve(), the dynamic part of a default dropped."""
    m = resolve(model, mode, theta, lam, size)
    return m if m.mode in COMPOSING_MODES else replace(m, mode="cache" if m.cache else "none")


def add_arguments(parser, modes=MODES, default_help: str = "the checkpoint's default (none without a tuned block)") -> None:
    g = parser.add_argument_group("memory of the piece (classical_music.memory; tuned values from config.json)")
    said = "cache: the continuous cache over the LSTM's own past"
    if "dynamic" in modes:
        said += "; dynamic: a gradient step after each segment; both"
    g.add_argument("--memory", choices=modes, default=None, help=f"{said} (default: {default_help})")
    g.add_argument("--memory_theta", type=float, default=None, help="cache sharpness theta in exp(theta h_t.h_i)")
    g.add_argument("--memory_lambda", type=float, default=None, help="cache share of the mixture, 0-1")
    g.add_argument("--memory_size", type=int, default=None, help="events the cache keeps")
    if "dynamic" in modes:
        g.add_argument("--memory_lr", type=float, default=None, help="dynamic evaluation: SGD step size")
        g.add_argument("--memory_segment", type=int, default=None, help="dynamic evaluation: events per step")


def from_args(model, args) -> Memory:
    return resolve(model, args.memory, args.memory_theta, args.memory_lambda, args.memory_size,
                   getattr(args, "memory_lr", None), getattr(args, "memory_segment", None))


# -- the cache in scoring: exact, per file, a block of queries at a time ---------------------------


def cache_logprob(hidden: torch.Tensor, nxt: torch.Tensor, hist, theta: float, size: int):
    """log p_cache(next event) for each step of one file's chunk, and the history to carry on.

    hidden [t, H]: the top layer's output at the chunk's steps; nxt [t]: the event after each (the
    target). hist: (keys [m, H], next events [m]) of the file's last m <= size earlier steps, or
    None at the file's start. Step q's cache holds the `size` steps before it, this chunk's earlier
    steps included. Returns (log p [t] float32: -inf where no stored event matches, nan where the
    cache is empty, i.e. the file's first step), and the new history (copies, at most size rows).
    """
    keys, ys = (hidden[:0], nxt[:0]) if hist is None else hist
    m, t = len(keys), len(hidden)
    all_k = torch.cat([keys, hidden]).float()
    all_y = torch.cat([ys, nxt])
    out = torch.empty(t, dtype=torch.float32, device=hidden.device)
    for q0 in range(0, t, BLOCK):
        q1 = min(t, q0 + BLOCK)
        lo = max(0, m + q0 - size)  # the earliest key any query of this block may see
        k, y = all_k[lo:m + q1], all_y[lo:m + q1]
        s = (hidden[q0:q1].float() @ k.t()) * theta  # [b, keys]
        pos = torch.arange(m + q0, m + q1, device=s.device).unsqueeze(1) - lo  # each query's own index in k
        j = torch.arange(len(k), device=s.device).unsqueeze(0)
        allowed = (j < pos) & (j >= pos - size)
        s = s.masked_fill(~allowed, -math.inf)
        hit = y.unsqueeze(0) == nxt[q0:q1].unsqueeze(1)
        out[q0:q1] = torch.logsumexp(s.masked_fill(~hit, -math.inf), 1) - torch.logsumexp(s, 1)
    keep = max(0, m + t - size)
    return out, (all_k[keep:].clone(), all_y[keep:].clone())


def mix(logp_model: torch.Tensor, logp_cache: torch.Tensor, lam: float) -> torch.Tensor:
    """log((1 - lam) p_model + lam p_cache), elementwise; p_model alone where the cache is empty (nan)."""
    if lam <= 0:
        return logp_model
    if lam >= 1:
        return torch.where(torch.isnan(logp_cache), logp_model, logp_cache)
    mixed = torch.logaddexp(logp_model + math.log1p(-lam), logp_cache + math.log(lam))
    return torch.where(torch.isnan(logp_cache), logp_model, mixed)


# -- the cache in sampling: a ring of the last `size` steps per piece -------------------------------


class StepCache:
    """The cache of each piece being sampled: one step at a time, [rows, size] ring buffers."""

    def __init__(self, memory: Memory, rows: int, hidden: int, vocab: int, device="cpu"):
        self.theta, self.lam, self.size, self.vocab = memory.theta, memory.lam, memory.size, vocab
        self.keys = torch.zeros(rows, memory.size, hidden, device=device)
        self.next = torch.zeros(rows, memory.size, dtype=torch.long, device=device)
        self.count = 0  # steps pushed (the same for every row)
        self.pending = None  # the last step's hidden state, waiting for the event drawn after it

    def push_many(self, hidden: torch.Tensor, nxt: torch.Tensor) -> None:
        """hidden [rows, T, H] at T steps with the event after each [rows, T] (a primer, chunk by
        chunk); a step whose next event is not known yet (-1, the primer's last) is left pending."""
        known = int((nxt[0] >= 0).sum())
        for k in range(max(0, known - self.size), known):  # older ones would be overwritten anyway
            self._put(hidden[:, k], nxt[:, k])
        if known < hidden.shape[1]:
            self.pending = hidden[:, known].float().clone()

    def _put(self, h: torch.Tensor, tok: torch.Tensor) -> None:
        slot = self.count % self.size
        self.keys[:, slot] = h
        self.next[:, slot] = tok
        self.count += 1

    def observe(self, tok: torch.Tensor) -> None:
        """The event drawn after the pending state: that pair joins the cache."""
        if self.pending is not None:
            self._put(self.pending, tok)
            self.pending = None

    def mix(self, logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """logits [rows, V] at the step whose top-layer output is hidden [rows, H] -> the mixture's
        log-probabilities [rows, V]; hidden waits for its next event (observe)."""
        self.pending = hidden.float().clone()
        n = min(self.count, self.size)
        if n == 0 or self.lam <= 0:
            return logits
        # one matrix-vector product per row: torch.bmm with a single column takes a slow generic
        # kernel on the CPU (9x slower at 8 rows x 500 events, docs/benchmarks.md "Memory of the piece")
        q = hidden.float() * self.theta
        s = torch.empty(len(q), n, device=q.device)
        for r in range(len(q)):
            torch.mv(self.keys[r, :n], q[r], out=s[r])
        w = torch.softmax(s, 1)  # [rows, n]
        if self.lam >= 1:
            return torch.log(torch.zeros(len(logits), self.vocab, device=logits.device).scatter_add_(1, self.next[:, :n], w))
        # the mixture in probabilities, then one log: 4 tensor operations where log_softmax,
        # logaddexp and two logs took 8 (a fifth of the cache's cost per step at N 500)
        p = torch.softmax(logits.float(), -1).mul_(1 - self.lam)
        return p.scatter_add_(1, self.next[:, :n], w.mul_(self.lam)).log_()


def with_mode(memory: Memory, mode: str) -> Memory:
    return replace(memory, mode=mode)


def as_block(memory: Memory, default: str, **measured) -> dict:
    """A config.json `memory` block: the tuned parameters, the default mode and what was measured."""
    d = asdict(memory)
    d.pop("mode")
    d["lambda"] = d.pop("lam")
    return {"default": default, **d, **measured}
