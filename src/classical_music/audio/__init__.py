"""Render MIDI to WAV or MP3: a sampled grand piano (or any SFZ / SF2 instrument), a hall, a master.

    classical-music render song.mid --output song.mp3 [--piano piano.sfz | --soundfont gm.sf2] [--reverb 0.3]

The instrument (instrument.py) is an SFZ played by pysfizz (sampler.py), by default the Salamander
grand from `classical-music piano install`, or an SF2 played by midirenderer (sf2.py), by default
pretty_midi's TimGM6mb. Either streams blocks into the room (room.py: reverb, loudness to -16 LUFS,
a limiter keeping peaks under -1 dBFS), through a spool file, into the encoders (encode.py), so
memory stays bounded for any length; silences over 30 s are shortened first (timeline.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import UserError
from ..files import atomic_path
from ..notes import open_score
from ..soundfont import SOUNDFONT_ENV
from . import sampler, sf2
from .encode import Writer, output_format
from .instrument import PIANO_ENV, Instrument, find_instrument, notice
from .room import CEILING, DEFAULT_REVERB, HOLD, LOOK, TARGET_LUFS, Loudness, Reverb, check_reverb, limiter_gain
from .sf2 import rate_ratio
from .timeline import performance

# The package's API (the rest lives in its modules: sf2.resample, encode.encode_mp3,
# soundfont.find_soundfont ...); DEFAULT_REVERB, check_reverb and find_instrument are what generate
# and the studio check a request with before anything renders.
__all__ = [
    "DEFAULT_REVERB", "PEAK", "TARGET_LUFS", "Instrument", "add_arguments", "add_instrument_arguments",
    "add_parser", "check_reverb", "contiguous", "find_instrument", "main", "render",
]

PEAK = CEILING  # the highest sample peak any output has (-1 dBFS and a little)
SILENCE_DB = -60.0  # below this (relative to the peak) the tail counts as silence
KEEP_TAIL = 0.3  # seconds kept after the last audible sample
FADE = 0.05  # seconds of fade-out so a cut never clicks
SPOOL_IN_MEMORY = 64 * 2**20  # the spool stays in memory up to this (~6 min of 44.1 kHz stereo)
PASS_BLOCK = 1 << 17  # frames per block of the second pass (~3 s)
STEP = 1 << 16  # frames at most per step of the first pass


def contiguous(chunks: Iterable[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
    """Overlapping (start, audio) chunks in start order -> consecutive blocks of their sum from 0."""
    acc, origin = np.zeros((0, 2), np.float32), 0
    for start, audio in chunks:
        if start > origin:  # nothing later adds to what lies before this chunk's start
            ready = min(start - origin, len(acc))
            if ready:
                yield acc[:ready]
            gap = start - origin - ready
            if gap:
                yield np.zeros((gap, 2), np.float32)
            acc, origin = acc[ready:], start
        need = start - origin + len(audio)
        if need > len(acc):
            acc = np.concatenate([acc, np.zeros((need - len(acc), 2), np.float32)])
        acc[start - origin: need] += audio
    if len(acc):
        yield acc


def _master(blocks: Iterable[np.ndarray], outs, fmts, sample_rate: int, reverb: float) -> dict:
    """Reverb, then two passes over a spool: measure (loudness, peak, where sound ends), then
    gain to TARGET_LUFS, limit, trim, fade and encode every output."""
    room = Reverb(reverb, sample_rate)
    meter = Loudness(sample_rate)
    peaks = []  # (first frame, frames, peak) per block
    frames = 0
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=outs[0].parent) as spool:
        def keep(y):
            nonlocal frames
            y = np.ascontiguousarray(y, np.float32)
            spool.write(y.tobytes())
            meter.add(y)
            peaks.append((frames, len(y), float(np.abs(y).max()) if len(y) else 0.0))
            frames += len(y)

        for block in blocks:
            for i in range(0, len(block), STEP):  # bounded temporaries in the reverb and the meter
                keep(room(block[i:i + STEP]))
        for block in room.tail():
            keep(block)
        peak = max((p for _, _, p in peaks), default=0.0)
        if peak <= 0:
            raise UserError("the instrument produced silence for this MIDI (no playable notes?)")
        lufs = meter.integrated()
        gain = 10 ** ((TARGET_LUFS - lufs) / 20) if np.isfinite(lufs) else CEILING / peak

        def read(a: int, b: int) -> np.ndarray:  # frames [a, b), zeros outside the spool
            lo, hi = max(a, 0), min(b, frames)
            x = np.zeros((b - a, 2), np.float32)
            if hi > lo:
                spool.seek(lo * 8)
                x[lo - a: hi - a] = np.frombuffer(spool.read((hi - lo) * 8), np.float32).reshape(-1, 2)
            return x

        # the end: the last sample above SILENCE_DB under the peak, plus a short faded tail
        threshold = peak * 10 ** (SILENCE_DB / 20)
        first, n, _ = next(b for b in reversed(peaks) if b[2] > threshold)
        loud = np.flatnonzero(np.abs(read(first, first + n)).max(axis=1) > threshold)
        end = min(frames, first + int(loud[-1]) + 1 + int(KEEP_TAIL * sample_rate))
        fade = min(end, int(FADE * sample_rate))
        look, hold = max(1, int(LOOK * sample_rate)), max(1, int(HOLD * sample_rate))
        out_meter, out_peak = Loudness(sample_rate), 0.0
        with ExitStack() as stack:
            writers = []
            for path, fmt in zip(outs, fmts):
                tmp = stack.enter_context(atomic_path(path))
                w = Writer(tmp, sample_rate, fmt)
                stack.callback(w.close)  # closed before atomic_path renames (LIFO)
                writers.append(w)
            for a in range(0, end, PASS_BLOCK):
                b = min(end, a + PASS_BLOCK)
                x = read(a - look - hold, b + look) * np.float32(gain)
                y = x[look + hold: look + hold + (b - a)] * limiter_gain(x, sample_rate)[:, None]
                if b > end - fade:  # the fade-out's part in this block
                    k = np.arange(max(a, end - fade), b)
                    y[k - a] *= ((end - k) / fade).astype(np.float32)[:, None]
                out_meter.add(y)
                out_peak = max(out_peak, float(np.abs(y).max()))
                for w in writers:
                    w.write(y)
    return {"frames": end, "loudness_lufs": out_meter.integrated(),
            "peak_dbfs": 20 * np.log10(max(out_peak, 1e-12)), "gain_db": 20 * np.log10(gain)}


def render(midi, out_path, soundfont=None, sample_rate: int = 44100, workers: int | None = None,
           piano=None, reverb: float = DEFAULT_REVERB, instrument: Instrument | None = None) -> dict:
    """Render a MIDI file (path or symusic Score) to ``out_path`` (.wav or .mp3).

    ``out_path`` may also be a list, e.g. [x.wav, x.mp3]: one synthesis, several files.
    Returns {"path" (the first), "paths", "seconds" (audio length), "render_seconds" (wall time),
    "soundfont" (the instrument's file), "instrument", "backend" ("sfz" or "sf2"), "sample_rate",
    "channels", "workers", "reverb", "loudness_lufs", "peak_dbfs"}. With an SF2, pieces longer
    than sf2.PARALLEL_MIN_SECONDS are split across ``workers`` processes (default: the CPUs).
    """
    t0 = time.perf_counter()
    outs = [Path(p) for p in (out_path if isinstance(out_path, (list, tuple)) else [out_path])]
    if not outs:
        raise UserError("no output file given")
    rate_ratio(sample_rate)  # one check of the rate for both backends
    fmts = [output_format(p, sample_rate) for p in outs]
    reverb = check_reverb(reverb)
    inst = instrument or find_instrument(piano, soundfont)
    score = open_score(midi)
    if not any(len(t.notes) for t in score.tracks):
        raise UserError(f"{midi if isinstance(midi, (str, Path)) else 'the score'} has no notes to render")
    perf = performance(score)
    n = workers if workers is not None else sf2.default_workers()
    if inst.kind == "sfz":
        from .. import piano as grand

        path, layers = grand.for_length(inst.path, perf.end())
        if layers is not None:
            notice(f"a piece of {perf.end() / 60:.0f} min plays with {layers} of the grand's velocity layers, "
                   f"so that its samples fit in memory")
        blocks, used = sampler.render_blocks(perf, path, sample_rate), 1
    else:
        blocks, used = contiguous(sf2.render_chunks(perf, inst.path, sample_rate, n)), max(1, int(n))
        used = 1 if perf.end() < sf2.PARALLEL_MIN_SECONDS else used
    info = _master(blocks, outs, fmts, sample_rate, reverb)
    return {
        "path": str(outs[0]),
        "paths": [str(p) for p in outs],
        "seconds": info["frames"] / sample_rate,
        "render_seconds": time.perf_counter() - t0,
        "soundfont": str(inst.path),
        "instrument": inst.name,
        "backend": inst.kind,
        "sample_rate": sample_rate,
        "channels": 2,
        "workers": used,
        "reverb": reverb,
        "loudness_lufs": info["loudness_lufs"],
        "peak_dbfs": info["peak_dbfs"],
    }


def _run(args) -> int:
    from ..files import output_folder

    out = args.output if args.output is not None else Path(args.midi).with_suffix(".wav")
    with output_folder(out):  # a missing --output folder is made, as generate makes its own
        info = render(args.midi, out, soundfont=args.soundfont, sample_rate=args.sample_rate, workers=args.workers,
                      piano=args.piano, reverb=args.reverb)
    speed = info["seconds"] / max(info["render_seconds"], 1e-9)
    print(f"wrote {info['path']}: {info['seconds']:.1f} s of audio in {info['render_seconds']:.2f} s "
          f"({speed:.0f}x real time, {info['instrument']}, {info['loudness_lufs']:.1f} LUFS)")
    return 0


def add_instrument_arguments(p: argparse.ArgumentParser, what: str = "the audio") -> None:
    """--piano, --soundfont and --reverb, the same on render, generate and serve."""
    p.add_argument("--piano", type=Path, default=None, metavar="PATH.sfz",
                   help=f"SFZ instrument for {what} (default: ${PIANO_ENV}, else the Salamander grand from "
                        "`classical-music piano install`, else a SoundFont)")
    p.add_argument("--soundfont", type=Path, default=None, metavar="PATH.sf2",
                   help=f"SF2 SoundFont for {what} instead (default when no SFZ piano: ${SOUNDFONT_ENV}, "
                        "a system General MIDI one, or TimGM6mb bundled with pretty_midi)")
    p.add_argument("--reverb", type=float, default=DEFAULT_REVERB, metavar="0..1",
                   help=f"hall reverb: 0 dry, 1 a large hall (default {DEFAULT_REVERB}, a small hall)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", type=Path, metavar="IN.mid", help="MIDI file to render")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="OUT.wav or OUT.mp3 (default: IN.wav next to the MIDI file)")
    add_instrument_arguments(p)
    p.add_argument("--sample_rate", type=int, default=44100, help="output sample rate in Hz (default 44100)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for an SF2 piece longer than 20 s (default: all CPUs; the sampler uses one)")


def _credit() -> str:
    from ..piano import CREDIT

    return CREDIT


def add_parser(sub) -> None:
    p = sub.add_parser("render", help="render a MIDI file to WAV or MP3 (grand piano, hall, -16 LUFS)",
                       description=__doc__.split("\n\n")[0], epilog=_credit())
    add_arguments(p)
    p.set_defaults(func=_run)


def main(argv=None) -> int:
    from ..cli import run

    p = argparse.ArgumentParser(prog="audio", description=__doc__.split("\n\n")[0], epilog=_credit())
    add_arguments(p)
    args = p.parse_args(argv)
    return run(_run, args)


if __name__ == "__main__":
    sys.exit(main())
