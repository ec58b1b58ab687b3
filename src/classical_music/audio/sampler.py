"""The sampler backend: any SFZ instrument through pysfizz (sfizz, the SFZ sampler used in DAWs),
fed our notes, sustain pedal (CC64) and key-ups block by block at the output rate.

Loaded synths are kept warm (loading a 16-layer piano takes a second or more; a play-along answer
must not pay for that): a small pool per (instrument, rate, file version), one user at a time each.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError
from .timeline import SUSTAIN, Performance

BLOCK = 4096  # frames per sfizz block; events land on their exact sample inside a block
OUT_BLOCK = 16  # sfizz blocks per block handed on (~1.5 s), so effects and meters see few calls
TAIL = 10.0  # seconds rendered at most after the last event while voices still ring
VOICES = 128  # polyphony: a pedalled run of a fast piece holds many strings at once
QUALITY = 1  # sfizz sample quality 1 (linear); higher settings cost 3x for no difference a listener hears on piano
SETTLE = (3, 0.005)  # (times, seconds): how _stream_in lets the loader's dispatcher run before waiting on it
_KEEP = 2  # warm synths kept per instrument: one for the job queue, one for play-along


def available() -> bool:
    from importlib.util import find_spec

    return find_spec("pysfizz") is not None


class _Pool:
    def __init__(self):
        self.lock = threading.Lock()
        self.idle: dict[tuple, list] = {}

    @contextmanager
    def synth(self, path: Path, rate: int):
        st = path.stat()
        key = (str(path), rate, st.st_mtime_ns, st.st_size)
        with self.lock:
            free = self.idle.get(key, [])
            synth = free.pop() if free else None
            for k in [k for k in self.idle if k[0] == key[0] and k != key]:  # the file changed: drop old ones
                del self.idle[k]
        if synth is None:
            synth = load(path, rate)
        try:
            yield synth
        except BaseException:
            synth = None  # interrupted mid-piece: its state is unknown, do not reuse it
            raise
        finally:
            if synth is not None:
                with self.lock:
                    free = self.idle.setdefault(key, [])
                    if len(free) < _KEEP:
                        free.append(synth)


POOL = _Pool()


def warm(path: Path, rate: int) -> None:
    """Have a loaded synth waiting in the pool."""
    with POOL.synth(Path(path), rate):
        pass


def load(path: Path, rate: int):
    """A pysfizz synth with the instrument loaded, or a UserError saying why it cannot play."""
    import pysfizz

    path = Path(path)
    if not path.is_file():
        raise UserError(f"SFZ instrument {path} not found")
    if path.suffix.lower() != ".sfz":
        raise UserError(f"{path} is not an SFZ instrument (.sfz)")
    synth = pysfizz.Synth(sample_rate=int(rate), block_size=BLOCK)
    synth._synth.set_num_voices(VOICES)
    synth._synth.set_sample_quality(QUALITY)
    # sfizz prints its parser's warnings on fd 2; pysfizz's own quiet mode needs sys.stderr to be a file
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        ok = synth._synth.load_sfz_file(str(path)) and synth._synth.get_num_regions() > 0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    if not ok:
        raise UserError(f"SFZ instrument {path} has no playable regions (or its samples are missing)")
    # sfizz streams each sample past its first part from disk in a background thread; rendering
    # offline, a block must wait for it rather than play silence where the loader fell behind
    # (freewheeling: what sfizz offers for offline rendering)
    synth._synth.enable_freewheeling()
    return synth


def events(perf: Performance, rate: int) -> np.ndarray:
    """All events as rows (sample, order, kind, a, b), sorted: at one instant key-ups first, then
    controllers and bends, then key-downs (a re-struck key is released before it sounds again)."""
    rows = []
    for p in perf.parts:
        if p.is_drum:  # a piano has no drum kit
            continue
        t_on = np.round(p.on * rate).astype(np.int64)
        t_off = np.maximum(np.round(p.off * rate).astype(np.int64), t_on + 1)
        pitch, vel = p.pitch.astype(np.int64), p.velocity.astype(np.int64)
        rows.append(np.stack([t_off, np.zeros_like(t_off), np.zeros_like(t_off), pitch, np.zeros_like(t_off)], 1))
        rows.append(np.stack([t_on, np.full_like(t_on, 2), np.ones_like(t_on), pitch, vel], 1))
        num = p.cc_number.astype(np.int64)
        val = p.cc_value.astype(np.int64).clip(0, 127)
        val = np.where(num == SUSTAIN, np.where(val >= 64, 127, 0), val)  # the pedal is down or up, as everywhere here
        t_cc = np.round(p.cc_time * rate).astype(np.int64)
        rows.append(np.stack([t_cc, np.ones_like(t_cc), np.full_like(t_cc, 2), num.clip(0, 127), val], 1))
        t_b = np.round(p.bend_time * rate).astype(np.int64)
        bend = p.bend_value.astype(np.int64).clip(-8192, 8192)
        rows.append(np.stack([t_b, np.ones_like(t_b), np.full_like(t_b, 3), np.zeros_like(t_b), bend], 1))
    if not rows:
        return np.zeros((0, 5), np.int64)
    ev = np.concatenate(rows)
    ev[:, 0] = np.maximum(ev[:, 0], 0)
    return ev[np.lexsort((ev[:, 1], ev[:, 0]))]


def _stream_in(synth, ev: np.ndarray) -> None:
    """Strike each (key, velocity) the piece will use once, one block each, before it is played.

    sfizz holds only the start of each sample in memory and streams the rest in the background
    when a voice first needs it; even freewheeling, a fresh synth's first piece then played some
    notes from a sample not yet streamed in: the Salamander grand's ABA sample (120 s, 373 key and
    velocity pairs) rendered by a new synth differed from the same synth's second rendering by up
    to 0.11 (full scale 1), a second of it 14 % quieter. Struck here first, every later block finds
    its samples whole, and the piece comes out the same however often it is played; the loading
    is done anyway, so the whole takes no longer (2.62 s against 2.89 s). Done for every piece, as
    a warm synth's pool may have let a sample go since (striking a loaded one costs one block).

    Freewheeling, a block waits only for the loads sfizz's dispatching thread has already taken
    off its queue; on a busy machine that thread may not have run yet, and the block plays on
    into silence (a held 0.5-s note fell silent at 0.2 s in 3 of 10 renders beside three busy
    loops). So this thread steps aside (SETTLE) before the blocks that wait: 0 of 40 since
    (bench/sampler_busy.py)."""
    s = synth._synth
    for a, b in sorted({(int(a), int(b)) for _, _, kind, a, b in ev.tolist() if kind == 1}):
        s.note_on(0, a, b)
        s.render_block()
        s.all_sound_off()
    for _ in range(SETTLE[0]):
        time.sleep(SETTLE[1])
        s.render_block()  # freewheeling: waits for every load dispatched while this thread slept


def render_blocks(perf: Performance, instrument: Path, rate: int) -> Iterator[np.ndarray]:
    """The piece as consecutive float32 (n, 2) blocks from time 0 until its last voice has died away."""
    ev = events(perf, rate)
    if not len(ev):
        return
    with POOL.synth(Path(instrument), rate) as synth:
        s = synth._synth
        _stream_in(synth, ev)
        s.all_sound_off()
        s.cc(0, SUSTAIN, 0)
        s.pitch_wheel(0, 0)
        last = int(ev[-1, 0])
        stop = last + int(TAIL * rate)
        pos, i, n = 0, 0, len(ev)
        out = []
        # note_on/note_off/cc bound once: this loop runs a few thousand times a minute of music
        note_on, note_off, cc, bend, render = s.note_on, s.note_off, s.cc, s.pitch_wheel, s.render_block
        times = ev[:, 0]
        while pos < stop:
            j = int(np.searchsorted(times, pos + BLOCK, side="left")) if i < n else n
            for t, _, kind, a, b in ev[i:j].tolist():
                d = t - pos
                if kind == 1:
                    note_on(d, a, b)
                elif kind == 0:
                    note_off(d, a, 0)
                elif kind == 2:
                    cc(d, a, b)
                else:
                    bend(d, b)
            i = j
            left, right = render()
            out.append(np.stack([left, right], axis=1))  # a copy: sfizz reuses its buffers
            pos += BLOCK
            if len(out) == OUT_BLOCK:
                yield np.concatenate(out)
                out = []
            if pos > last and s.get_num_active_voices() == 0:
                break
        if out:
            yield np.concatenate(out)
        s.all_sound_off()

