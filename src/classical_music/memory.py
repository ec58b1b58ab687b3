"""Memory of the piece: what the model may use of the piece's own past beyond its LSTM state.

* cache: the continuous cache of Grave, Joulin & Usunier (ICLR 2017). The top LSTM layer's output
  h_i at each of the last ``size`` events is kept with the event that followed it; the next event's
  distribution is p = (1 - lam) p_model + lam p_cache, where p_cache(w) is proportional to the sum
  of exp(theta h_t . h_i) over the stored i whose next event was w. Nothing is trained: theta, lam
  and size are tuned on valid pieces (`classical-music tune-memory`) and stored in a checkpoint's
  config.json as a ``memory`` block.
  What it recalls can be narrowed: ``gap`` leaves out the newest events (what the LSTM still
  remembers), ``events`` "notes" proposes key-downs only, mixed inside the key-down class, and
  ``recall`` "motifs" finds them not by similar states but by the piece's own interval patterns
  (Motifs: a copy model over its melody). Composing may read its own values: the block's
  ``compose`` part.
* dynamic: dynamic evaluation (Krause et al., ICML 2018, classical_music.dynamic): after each
  segment of a piece, one gradient step on that segment, the weights restored after each file.
* both: the two together (the cache holds the adapting model's states).

The scorer (scoring.score) and the sampler (generate.sampling.sample) call into this module; the
cache's arithmetic runs in float32 on whatever hidden states the forward gives (int8's included).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .errors import UserError

MODES = ("none", "cache", "dynamic", "both")
EVENTS = ("all", "notes")  # what the cache may propose: any event, or key-downs only
RECALLS = ("states", "motifs")  # states: exp(theta h_t . h_i) over stored LSTM outputs; motifs: Motifs below
# Used when a checkpoint's config.json has no `memory` block (tune-memory writes one).
DEFAULT_THETA, DEFAULT_LAM, DEFAULT_SIZE = 0.1, 0.1, 2000
DEFAULT_LR, DEFAULT_SEGMENT = 0.05, 128  # SGD on the mean loss: 0.03-0.1 gained most on two valid files, 0.3 diverged
MAX_SIZE = 100_000  # the state cache is ~size x hidden floats per file or piece: 100,000 x 512 is 205 MB
RECENT_KEYS = 8  # the register a recalled pitch is held near: the piece's last 8 key-downs (both hands)
BLOCK = 512  # queries per block in cache_logprob: its scores are BLOCK x (size + BLOCK) floats


@dataclass(frozen=True)
class Memory:
    mode: str = "none"
    theta: float = DEFAULT_THETA  # the cache's sharpness: exp(theta h_t . h_i)
    lam: float = DEFAULT_LAM  # the cache's share of the mixture
    size: int = DEFAULT_SIZE  # events kept
    lr: float = DEFAULT_LR  # dynamic evaluation's SGD step
    segment: int = DEFAULT_SEGMENT  # events between two dynamic steps
    gap: int = 0  # the cache recalls only steps at least gap + 1 events back (0: all it keeps)
    events: str = "all"  # what the cache proposes: all events, or "notes" (key-downs only)
    recall: str = "states"  # how the cache finds what to propose: LSTM states (Grave et al.) or motifs
    register: float = 0.0  # composing, notes only: semitones a proposed pitch may stray from the hands (0: any)

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
        if isinstance(self.gap, bool) or not isinstance(self.gap, int) or not 0 <= self.gap < self.size:
            raise UserError(f"--memory_gap must be an integer in 0 ... memory size - 1 ({self.size - 1}), got {self.gap!r}")
        if self.events not in EVENTS:
            raise UserError(f"--memory_events must be one of {', '.join(EVENTS)}, got {self.events!r}")
        if self.recall not in RECALLS:
            raise UserError(f"--memory_recall must be one of {', '.join(RECALLS)}, got {self.recall!r}")
        if self.recall == "motifs" and self.events != "notes":
            raise UserError("--memory_recall motifs recalls pitches: it needs --memory_events notes")
        if not (math.isfinite(self.register) and self.register >= 0):
            raise UserError(f"--memory_register must be a number of semitones >= 0, got {self.register}")
        if self.register and self.events != "notes":
            raise UserError("--memory_register weighs recalled pitches: it needs --memory_events notes")

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
            if self.gap or self.events != "all" or self.register or self.recall != "states":  # older JSON keeps its shape
                d.update(gap=self.gap, events=self.events, recall=self.recall, register=self.register)
            if self.recall == "motifs":
                del d["theta"]  # motifs weigh no states
        if self.dynamic:
            d.update(lr=self.lr, segment=self.segment)
        return {("lambda" if k == "lambda_" else k): v for k, v in d.items()}


def stored(model) -> dict:
    """The checkpoint's tuned `memory` block (config.json), or {}."""
    block = (getattr(model, "checkpoint_config", None) or {}).get("memory")
    return block if isinstance(block, dict) else {}


def resolve(model, mode: str | None, theta=None, lam=None, size=None, lr=None, segment=None, gap=None, events=None,
            register=None, recall=None, block: dict | None = None) -> Memory:
    """The memory a run uses: the flags given, else the checkpoint's tuned block, else the defaults.
    mode None takes the block's `default` mode (none where the checkpoint has no block)."""
    block = stored(model) if block is None else block
    keys = {"theta": "theta", "lam": "lambda", "size": "size", "lr": "lr", "segment": "segment", "gap": "gap",
            "register": "register"}
    base = {k: block[v] for k, v in keys.items()
            if isinstance(block.get(v), (int, float)) and not isinstance(block.get(v), bool)}
    for k in ("size", "segment", "gap"):  # JSON may spell 2000 as 2000.0; Memory checks the value itself
        if k in base and float(base[k]).is_integer():
            base[k] = int(base[k])
    for k in ("events", "recall"):
        if isinstance(block.get(k), str):
            base[k] = block[k]
    given = {k: v for k, v in dict(theta=theta, lam=lam, size=size, lr=lr, segment=segment, gap=gap,
                                   events=events, register=register, recall=recall).items() if v is not None}
    mode = mode if mode is not None else block.get("default", "none")
    merged = base | given
    # a flag given wins over the block's values that would contradict it (not the other way round):
    # --memory_events all leaves the motifs recall and the register weight, which need key-downs;
    # a --memory_size at or under the block's gap takes half the size as its gap
    if given.get("events") == "all":
        if "recall" not in given:
            merged["recall"] = "states"
        if "register" not in given:
            merged["register"] = 0.0
    if "size" in given and "gap" not in given and merged.get("gap", 0) >= merged["size"]:
        merged["gap"] = merged["size"] // 2
    return Memory(mode=mode, **merged)


# Composing uses the cache only: dynamic evaluation would take gradient steps on the model's own
# samples (a checkpoint whose default is dynamic or both composes with none or the cache).
COMPOSING_MODES = ("none", "cache")


def compose_block(model) -> dict:
    """The block composing reads: the checkpoint's `memory` block with its `compose` part (tuned on
    the pieces the model composes rather than on valid likelihood) laid over it, when it has one."""
    block = stored(model)
    part = block.get("compose")
    return block | part if isinstance(part, dict) else block


def composing(model, mode: str | None, theta=None, lam=None, size=None, gap=None, events=None, register=None,
              recall=None) -> Memory:
    """The memory a piece is composed with: as resolve() from compose_block(), the dynamic part of a
    default dropped."""
    m = resolve(model, mode, theta, lam, size, gap=gap, events=events, register=register, recall=recall,
                block=compose_block(model))
    return m if m.mode in COMPOSING_MODES else replace(m, mode="cache" if m.cache else "none")


def add_arguments(parser, modes=MODES, default_help: str = "the checkpoint's config.json block's default: the shipped "
                  "model's is cache; none without a block") -> None:
    g = parser.add_argument_group("memory of the piece (classical_music.memory; tuned values from config.json)")
    said = "cache: the continuous cache over the LSTM's own past"
    if "dynamic" in modes:
        said += "; dynamic: a gradient step after each segment; both"
    g.add_argument("--memory", choices=modes, default=None, help=f"{said} (default: {default_help})")
    g.add_argument("--memory_theta", type=float, default=None, help="cache sharpness theta in exp(theta h_t.h_i)")
    g.add_argument("--memory_lambda", type=float, default=None, help="cache share of the mixture, 0-1")
    g.add_argument("--memory_size", type=int, default=None, help="events the cache keeps")
    g.add_argument("--memory_gap", type=int, default=None, help="the cache recalls only events at least this many + 1 back")
    g.add_argument("--memory_events", choices=EVENTS, default=None,
                   help="what the cache proposes: all events, or notes (key-downs only; timing is the model's)")
    g.add_argument("--memory_recall", choices=RECALLS, default=None,
                   help="how the cache finds what to propose: states (the LSTM's, similar to now) or motifs (with "
                        "notes: where the last 4 intervals were heard before, the interval that followed)")
    if "dynamic" not in modes:  # composing only: scoring has no hands to stay near
        g.add_argument("--memory_register", type=float, default=None,
                       help="with notes: semitones a recalled pitch may lie from the piece's last 8 key-downs "
                            "(a Gaussian weight; 0: any)")
    if "dynamic" in modes:
        g.add_argument("--memory_lr", type=float, default=None, help="dynamic evaluation: SGD step size")
        g.add_argument("--memory_segment", type=int, default=None, help="dynamic evaluation: events per step")


def from_args(model, args) -> Memory:
    return resolve(model, args.memory, args.memory_theta, args.memory_lambda, args.memory_size,
                   getattr(args, "memory_lr", None), getattr(args, "memory_segment", None),
                   getattr(args, "memory_gap", None), getattr(args, "memory_events", None),
                   recall=getattr(args, "memory_recall", None))


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
    notes = memory.events == "notes"
    if notes and (proposes is None or proposes.stop <= proposes.start):
        raise UserError("--memory_events notes needs a tokenizer with key-down events")
    if memory.recall == "motifs":
        lp_cache, hist = motif_logprob(nxt, hist, memory.size, memory.gap, proposes)
    else:
        lp_cache, hist = cache_logprob(hidden, nxt, hist, memory.theta, memory.size, memory.gap,
                                       proposes if notes else None)
    share = None
    if notes:
        lf = logits.float()
        share = torch.logsumexp(lf[:, proposes], -1) - torch.logsumexp(lf, -1)
    return mix(logp_model, lp_cache, memory.lam, share), hist


# -- motifs: where the piece's last few intervals were heard before, and what followed -----------

MOTIF = 4  # intervals a recalled place must share with the piece's last key-downs
MATCHES = 16  # the latest such places, one vote each


class Motifs:
    """One piece's key-downs so far, indexed by each run of MOTIF intervals (transposition-invariant,
    as a theme returns in another key). propose(): for each of the latest MATCHES earlier places whose
    MOTIF intervals equal the piece's last MOTIF, the current pitch plus the interval that followed
    there, when that following key-down was taken size ... gap + 1 events before now. A copy model
    over the piece's own melody, what an n-gram cache is to words; no hidden states, so it costs a
    dictionary look-up a step where the state cache's product costs ~40 us (docs/benchmarks.md)."""

    def __init__(self):
        self.pitch: list[int] = []
        self.step: list[int] = []
        self.index: dict[tuple, list[int]] = {}
        self.last: tuple | None = None  # the piece's last MOTIF intervals
        self.seen = 0  # steps scored so far (scoring carries it across a file's chunks)

    def _key(self, n: int) -> tuple:
        p = self.pitch
        return tuple(p[i + 1] - p[i] for i in range(n - MOTIF, n))

    def add(self, pitch: int, step: int) -> None:
        self.pitch.append(pitch)
        self.step.append(step)
        n = len(self.pitch) - 1
        self.last = self._key(n) if n >= MOTIF else None
        if self.last is not None:
            self.index.setdefault(self.last, []).append(n)

    def prune(self, size: int) -> None:
        """Bounded memory: past 2 x size key-downs, keep the newest size + MOTIF + 1 (a follower within
        size events has at most size key-downs after it, and its motif MOTIF + 1 before)."""
        if len(self.pitch) <= 2 * size + MOTIF + 1:
            return
        keep = size + MOTIF + 1
        pitch, step = self.pitch[-keep:], self.step[-keep:]
        self.pitch, self.step, self.index = [], [], {}
        for p, s in zip(pitch, step):
            self.add(p, s)

    def propose(self, now: int, size: int, gap: int, width: int) -> np.ndarray | None:
        """Votes over the `width` pitches (normalised), or None where nothing earlier matches."""
        self.prune(size)
        n = len(self.pitch) - 1
        if n < MOTIF:
            return None
        places = self.index[self.last]
        # the followers taken gap + 1 or more events back are the key-downs before index f; each place
        # j is followed by j + 1, so the places to look at are j < f - 1 (bisect: repeated figures
        # make long lists, and the newest of them are the ones the gap rules out)
        f = bisect.bisect_left(self.step, now - gap)
        k = bisect.bisect_left(places, min(n, f - 1))
        votes = np.zeros(width)
        found = 0
        for i in range(k - 1, -1, -1):
            j = places[i]
            if self.step[j + 1] < now - size:
                break  # the index is in order: every earlier place is older still
            p = self.pitch[n] + self.pitch[j + 1] - self.pitch[j]
            if 0 <= p < width:
                votes[p] += 1
                found += 1
                if found == MATCHES:
                    break
        return votes / found if found else None


def motif_logprob(nxt: torch.Tensor, hist: Motifs | None, size: int, gap: int, proposes: slice):
    """log p_cache(target) of the motifs recall for each step of one file's chunk (nan where it has
    nothing to say: no match, or the target is not a key-down), and the Motifs to carry on."""
    mot = Motifs() if hist is None else hist
    width = proposes.stop - proposes.start
    out = np.full(len(nxt), np.nan, np.float32)
    for q, y in enumerate(nxt.tolist()):
        y -= proposes.start
        if 0 <= y < width:
            c = mot.propose(mot.seen, size, gap, width)
            if c is not None:
                out[q] = np.log(c[y]) if c[y] > 0 else -np.inf
            mot.add(y, mot.seen)
        mot.seen += 1
    return torch.from_numpy(out).to(nxt.device), mot


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
        self.proposes = proposes if memory.events == "notes" else None
        if memory.events == "notes" and proposes is None:
            raise UserError("--memory_events notes needs a tokenizer with key-down events")
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
            if self.motifs is not None:
                self.motifs[r].add(t, self.count)
                self._heard(r, t)
                continue
            u = self.used[r]
            if u == self.at.shape[1]:  # full: keep the newest `size` (older ones are out of the window)
                n = self.size
                self.keys[r, :n], self.at[r, :n], self.next[r, :n] = self.keys[r, u - n:u], self.at[r, u - n:u], self.next[r, u - n:u]
                u = n
            self.keys[r, u], self.at[r, u], self.next[r, u] = h[r], self.count, t
            self.used[r] = u + 1
            if self.proposes is not None:
                self._heard(r, t)
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
        q = hidden.float().cpu().numpy() * self.theta if self.motifs is None else np.zeros((len(self.used), 0))
        c = np.zeros((len(q), self.width))  # each row's cache distribution over what it proposes
        found = np.zeros((len(q), 1))
        for r in range(len(q)):
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


def with_mode(memory: Memory, mode: str) -> Memory:
    return replace(memory, mode=mode)


def as_block(memory: Memory, default: str, **measured) -> dict:
    """A config.json `memory` block: the tuned parameters, the default mode and what was measured."""
    d = asdict(memory)
    d.pop("mode")
    d["lambda"] = d.pop("lam")
    return {"default": default, **d, **measured}
