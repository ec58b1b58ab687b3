"""The room and the master: a hall reverb (pedalboard, Spotify's wrapper of JUCE's Freeverb), the
loudness of the whole piece (ITU-R BS.1770 with pyloudnorm's K-weighting filters, measured block by
block so an hour never sits in memory as float64) and a look-ahead peak limiter.

Why our own limiter and not pedalboard.Limiter: JUCE's limiter runs a fixed 4:1 compressor from
-10 dBFS before its limiting stage, which would squash the loud half of a piano's dynamics; this
one only touches the few peaks that the loudness gain pushes over the ceiling.
"""

from __future__ import annotations

import numpy as np

TARGET_LUFS = -16.0
CEILING = 10 ** (-1.05 / 20)  # sample peaks stay under -1 dBFS after 16-bit rounding
LOOK = 0.008  # limiter: gain ramps down over 8 ms before a peak and back up over 8 ms
HOLD = 0.060  # and is held 60 ms after it, so it does not flutter on a ringing chord
DEFAULT_REVERB = 0.3  # a small hall (RT60 about 1.3 s)
GATE_ABS = -70.0  # BS.1770 gates
GATE_REL = -10.0


def check_reverb(amount) -> float:
    from ..errors import UserError

    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= float(amount) <= 1.0:
        raise UserError(f"--reverb must be a number from 0 (dry) to 1 (a large hall), got {amount!r}")
    return float(amount)


class Reverb:
    """Streaming stereo hall: feed (n, 2) float32 blocks in order; tail() gives what rings on after."""

    def __init__(self, amount: float, rate: int):
        self.rate = rate
        self.fx = None
        if amount > 0:
            import pedalboard

            self.fx = pedalboard.Reverb(room_size=0.35 + 0.55 * amount, damping=0.45,
                                        wet_level=0.3 * amount, dry_level=0.4, width=0.9)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.fx is None or not len(x):
            return x
        return np.ascontiguousarray(self.fx.process(np.ascontiguousarray(x.T), self.rate, reset=False).T)

    def tail(self, seconds: float = 4.0, block: int = 8192):
        """Blocks of the reverb's ring-out after the input stops, until it is 80 dB down or seconds pass."""
        if self.fx is None:
            return
        zeros = np.zeros((block, 2), np.float32)
        first = None
        for _ in range(int(seconds * self.rate / block) + 1):
            y = self(zeros)
            level = float(np.abs(y).max())
            first = level if first is None else first
            yield y
            if level <= 1e-4 * max(first, 1e-9):
                break


class Loudness:
    """Integrated loudness (LUFS) of a stereo stream, exactly as pyloudnorm's Meter would compute it on
    the whole signal: K-weighting, 400-ms blocks every 100 ms, absolute and relative gates."""

    def __init__(self, rate: int):
        import pyloudnorm
        from scipy.signal import lfilter_zi

        self.rate = rate
        meter = pyloudnorm.Meter(rate)
        self.stages = [(f.passband_gain, np.asarray(f.b, np.float64), np.asarray(f.a, np.float64))
                       for f in meter._filters.values()]
        self.zi = [np.zeros((len(lfilter_zi(b, a)), 2)) for _, b, a in self.stages]
        self.n = 0  # samples seen
        self.hops: list[np.ndarray] = []  # sum of squares per 100-ms hop and channel
        self.acc = np.zeros(2)

    def add(self, x: np.ndarray) -> None:
        from scipy.signal import lfilter

        if not len(x):
            return
        y = np.asarray(x, np.float64)
        for i, (gain, b, a) in enumerate(self.stages):
            y, self.zi[i] = lfilter(b, a, y, axis=0, zi=self.zi[i])
            y = y * gain if gain != 1 else y
        sq = np.cumsum(np.square(y), axis=0)
        start = self.n
        self.n += len(x)
        # hop boundaries floor(j * rate / 10) that fall in (start, self.n]
        j0 = (start * 10) // self.rate + 1
        j1 = (self.n * 10) // self.rate
        prev = 0
        for j in range(j0, j1 + 1):
            at = (j * self.rate) // 10 - start  # samples of this block before the boundary
            if at <= 0:
                continue
            s = sq[at - 1]
            self.hops.append(self.acc + s - (sq[prev - 1] if prev else 0.0))
            self.acc = np.zeros(2)
            prev = at
        self.acc = self.acc + sq[-1] - (sq[prev - 1] if prev else 0.0)

    def integrated(self) -> float:
        hops = np.array(self.hops + [self.acc]) if self.n else np.zeros((1, 2))
        seconds = self.n / self.rate
        n_blocks = max(1, int(np.round((seconds - 0.4) / 0.1)) + 1)
        csum = np.concatenate([np.zeros((1, 2)), np.cumsum(hops, axis=0)])
        j = np.arange(n_blocks)
        hi = np.minimum(j + 4, len(hops))
        z = (csum[hi] - csum[np.minimum(j, len(hops))]) / (0.4 * self.rate)  # (blocks, channels)
        power = z.sum(axis=1)
        with np.errstate(divide="ignore"):
            block_lufs = -0.691 + 10 * np.log10(power)
            gated = block_lufs >= GATE_ABS
            if not gated.any():
                return float("-inf")
            rel = -0.691 + 10 * np.log10(power[gated].mean()) + GATE_REL
            keep = (block_lufs > rel) & (block_lufs > GATE_ABS)
            if not keep.any():
                return float("-inf")
            return float(-0.691 + 10 * np.log10(power[keep].mean()))


def limiter_gain(x: np.ndarray, rate: int, ceiling: float = CEILING) -> np.ndarray:
    """Gain for the middle of ``x``: x holds look+hold samples before the stretch and look after it.

    Each sample's gain is a moving average (over look) of the least gain needed anywhere from hold
    before to look after it, so no sample of the stretch can exceed the ceiling (every average
    includes a value no larger than that sample's own need) and the gain moves smoothly.
    """
    from scipy.ndimage import minimum_filter1d

    look, hold = max(1, int(LOOK * rate)), max(1, int(HOLD * rate))
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(x).max(axis=1), 1e-12))
    if need.min() >= 1.0:
        return np.ones(len(x) - 2 * look - hold, np.float32)
    n = len(x) - 2 * look - hold
    size = hold + look + 1
    size += 1 - size % 2  # odd, so origin -(size // 2) puts each window's start at its index
    # m[q]: the least need over x[q : q + size] (one sample more than hold + look + 1 when that was
    # even: only safer). The stretch's sample i sits at x index i + look + hold; the windows that
    # reach from hold before it to look after it start at i .. i + look: average those.
    m = minimum_filter1d(need, size, mode="nearest", origin=-(size // 2))[: n + look]
    c = np.concatenate([[0.0], np.cumsum(m, dtype=np.float64)])
    g = (c[look + 1: look + 1 + n] - c[:n]) / (look + 1)
    return np.minimum(g, 1.0).astype(np.float32)
