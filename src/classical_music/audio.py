"""Render MIDI to WAV or MP3 with a real SoundFont synthesizer.

    classical-music render song.mid --output song.mp3 [--soundfont piano.sf2] [--sample_rate 44100]

The synthesizer is ``midirenderer`` (a Rust SoundFont engine on PyPI, no system packages needed),
with pretty_midi's bundled General MIDI SoundFont (TimGM6mb) when no better one is found. Output
is stereo, peak-normalised to -1 dBFS, with trailing silence trimmed to a short tail.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from fractions import Fraction
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_path
from .notes import open_score
from .soundfont import SOUNDFONT_ENV, SYSTEM_SOUNDFONTS, _load_soundfont, _pretty_midi_soundfont, find_soundfont  # noqa: F401

FORMATS = {".wav": ("WAV", "PCM_16"), ".mp3": ("MP3", "MPEG_LAYER_III")}
MP3_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}

ENGINE_RATE = 48000  # midirenderer always renders 48 kHz, 16-bit stereo
ENGINE_BLOCK = 64  # its synthesizer applies MIDI events at block starts
LEAD = 640  # engine samples of silence before a chunk's first note: > soxr HQ's half-width at 8 kHz
PEAK = 10 ** (-1 / 20)  # -1 dBFS leaves headroom for MP3 encoders' overshoot
SILENCE_DB = -60.0  # below this (relative to the peak) the tail counts as silence
KEEP_TAIL = 0.3  # seconds kept after the last audible sample
FADE = 0.05  # seconds of fade-out so a cut never clicks
RELEASE = 2.0  # seconds rendered after the last note stops: release envelope and reverb
MAX_RING = 10.0  # a note held by the pedal is rendered at most this long after its key is released
MAX_NOTE_SECONDS = 60.0  # and no note longer than this from its onset
VOICE_COST = 0.095  # engine time per voice-second relative to per second of music (fitted on the corpus)
PARALLEL_MIN_SECONDS = 20.0  # shorter pieces render in-process: a fork costs more than it saves


def _rate_ratio(sample_rate: int) -> tuple[int, int]:
    if not isinstance(sample_rate, (int, np.integer)) or not 8000 <= sample_rate <= 192000:
        raise UserError(f"--sample_rate must be an integer from 8000 to 192000, got {sample_rate}")
    r = Fraction(int(sample_rate), ENGINE_RATE)
    if r.numerator > 1000:  # the polyphase kernel has one column per output phase
        raise UserError(f"--sample_rate {sample_rate} is not supported: use a standard rate such as 44100 or 48000")
    return r.numerator, r.denominator


def resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Band-limited resampling of (n, channels) float32 audio by up/down, with libsoxr (HQ).

    Output sample k sits at input time k * down / up and there are ceil(n * up / down) of them, so
    pieces resampled separately line up when they start at multiples of ``down`` input samples and
    have more silence before their first sound than the filter's half-width (LEAD).
    bench/render_speed.py measured soxr HQ against the polyphase Kaiser-sinc resampler this
    replaced: ~2.4x faster, and ~46 dB less error against the exact signal (docs/benchmarks.md).
    """
    if up == down:
        return x
    import soxr

    n, c = x.shape
    n_out = -(-n * up // down)
    if n == 0:
        return np.zeros((0, c), np.float32)
    y = soxr.resample(np.ascontiguousarray(x, np.float32), down, up, quality="HQ")
    if len(y) < n_out:  # soxr rounds the length to nearest
        y = np.concatenate([y, np.zeros((n_out - len(y), c), np.float32)])
    return y[:n_out]


def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """midirenderer's 16-bit PCM WAV bytes -> (float32 (n, channels), rate) without a copy through a file."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("synthesizer returned no WAV data")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = (int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little"),
                   int.from_bytes(body[14:16], "little"))
        elif cid == b"data" and fmt is not None:
            channels, rate, bits = fmt
            if bits != 16:
                raise RuntimeError(f"synthesizer returned {bits}-bit audio, expected 16")
            pcm = np.frombuffer(body[: len(body) // (2 * channels) * 2 * channels], "<i2")
            return pcm.reshape(-1, channels).astype(np.float32) / 32768.0, rate
        pos += 8 + size + (size & 1)
    raise RuntimeError("synthesizer returned a WAV without audio")


def _synthesize(midi_bytes: bytes, soundfont: str, up: int, down: int) -> np.ndarray:
    """One chunk: SoundFont synthesis, a fade at the cut, resampling. Runs in a worker or in-process."""
    import midirenderer

    sf_bytes = _load_soundfont(Path(soundfont))
    try:
        wav = midirenderer.render_wave_from(sf_bytes, midi_bytes)
    except BaseException as e:  # a Rust panic arrives as pyo3's PanicException, a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise RuntimeError(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    audio, rate = _decode_wav(wav)
    if rate != ENGINE_RATE:
        raise RuntimeError(f"synthesizer rendered {rate} Hz, expected {ENGINE_RATE}")
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    fade = min(len(audio), int(FADE * rate))
    if fade:
        audio[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)[:, None]
    return resample(audio, up, down)


def pedal_intervals(track, end: float | None = None) -> np.ndarray:
    """(k, 2) [down, up) times of a track's sustain pedal (CC64 >= 64) in the track's time unit.

    Unlike symusic's ``track.pedals`` this keeps a pedal that is never lifted (it lasts to ``end``).
    """
    c = track.controls.numpy()
    sel = c["number"] == 64
    t, down = c["time"][sel].astype(np.float64), c["value"][sel] >= 64
    if not len(t):
        return np.zeros((0, 2))
    order = np.argsort(t, kind="stable")
    t, down = t[order], down[order]
    change = np.flatnonzero(np.diff(np.r_[False, down].astype(np.int8)))  # edges, repeats ignored
    times, states = t[change], down[change]
    starts = times[states]
    ends = times[~states]
    if len(ends) < len(starts):
        ends = np.r_[ends, max(end if end is not None else starts[-1], starts[-1])]
    return np.stack([starts, ends], axis=1)


def _ring_end(onset: np.ndarray, offset: np.ndarray, pedals: np.ndarray) -> np.ndarray:
    """When each note has stopped sounding: key release, or pedal lift if the pedal holds it, capped."""
    if not len(pedals):
        return offset
    k = np.searchsorted(pedals[:, 0], offset, side="right") - 1
    held = (k >= 0) & (offset < pedals[np.maximum(k, 0), 1])
    ring = offset.copy()
    ring[held] = pedals[k[held], 1]
    return np.minimum(ring, offset + MAX_RING)


def _chunks(score, n_chunks: int, align: int) -> list[tuple[bytes, int]]:
    """Split the piece into MIDI files that render independently and sum to the whole.

    Synthesis is linear, so notes can be partitioned by onset: each chunk gets its notes, every
    controller and pitch-bend value in force when it starts (moved to time 0), and is rendered until
    its own notes have died away. Chunk starts are multiples of ``align`` engine samples so the
    engine's event blocks and the resampler's phases match a single full render. Returns
    (midi bytes, start in engine samples) pairs.
    """
    import symusic

    rate = ENGINE_RATE
    tracks = []
    for tr in score.tracks:
        n = tr.notes.numpy()
        on = n["time"].astype(np.float64)
        off = on + np.maximum(n["duration"].astype(np.float64), 0)
        end = float(off.max()) if len(off) else 0.0
        ring = _ring_end(on, off, pedal_intervals(tr, end=end + MAX_RING))
        ring = np.minimum(ring, on + MAX_NOTE_SECONDS)  # a stuck note must not mean an hour of rendering
        tracks.append((tr, n, on, ring))
    onsets = np.concatenate([t[2] for t in tracks])
    voices = np.concatenate([t[3] - t[2] for t in tracks])
    order = np.argsort(onsets, kind="stable")
    onsets = onsets[order]
    # Balance chunks on the engine's measured cost: ~5 ms per second of music (effects, mixing)
    # plus ~0.5 ms per second of each sounding voice.
    cost = onsets + VOICE_COST * np.cumsum(voices[order] + RELEASE)
    bounds = [-np.inf]
    for k in range(1, n_chunks):
        i = int(np.searchsorted(cost, cost[-1] * k / n_chunks))
        if i < len(onsets) and onsets[i] > bounds[-1] and onsets[i] > 0:
            bounds.append(float(onsets[i]))
    bounds.append(np.inf)

    tpq = rate // 2  # at 120 bpm one tick is one engine sample: exact, simple arithmetic
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        # start early enough that the resampler's filter never reaches back before the chunk
        start = 0 if lo == -np.inf else max(0, int(lo * rate) - LEAD) // align * align
        parts, last = [], 0.0
        for tr, n, on, ring in tracks:
            sel = (on >= lo) & (on < hi)
            if sel.any():
                last = max(last, float(ring[sel].max()))
            parts.append(sel)
        if last == 0.0 and not any(p.any() for p in parts):
            continue
        stop = int(math.ceil((last + RELEASE) * rate))
        chunk = symusic.Score(tpq)
        chunk.tempos.append(symusic.Tempo(0, 120.0))
        for (tr, n, on, ring), sel in zip(tracks, parts):
            t = symusic.Track(name=tr.name, program=tr.program, is_drum=tr.is_drum)
            if sel.any():
                t_on = np.maximum(np.round(on[sel] * rate).astype(np.int64) - start, 0)
                dur = np.round(n["duration"][sel].astype(np.float64) * rate).astype(np.int64)
                # a note-off past the end marker would stretch the render: the engine stops at the last event
                dur = np.clip(dur, 1, np.maximum(stop - start - t_on, 1))
                t.notes = symusic.Note.from_numpy(
                    t_on.astype(np.int32), dur.astype(np.int32),
                    n["pitch"][sel], np.clip(n["velocity"][sel], 1, 127),
                )
            c = tr.controls.numpy()
            ct = np.round(c["time"].astype(np.float64) * rate).astype(np.int64)
            keep = _state_then_window(ct, c["number"], start, stop)
            if keep.any():
                t.controls = symusic.ControlChange.from_numpy(
                    np.maximum(ct[keep] - start, 0).astype(np.int32), c["number"][keep], c["value"][keep])
            b = tr.pitch_bends.numpy()
            bt = np.round(b["time"].astype(np.float64) * rate).astype(np.int64)
            keep = _state_then_window(bt, np.zeros(len(bt), np.int8), start, stop)
            if keep.any():
                t.pitch_bends = symusic.PitchBend.from_numpy(
                    np.maximum(bt[keep] - start, 0).astype(np.int32), b["value"][keep])
            chunk.tracks.append(t)
        # the engine renders up to its last event: this marker sets how long the tail is
        chunk.markers.append(symusic.TextMeta(stop - start, "end"))
        out.append((chunk.dumps_midi(), start))
    return out


def _state_then_window(times: np.ndarray, keys: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Events to keep for a chunk [start, stop): the last one per key before start, and those inside."""
    keep = (times >= start) & (times < stop)
    before = np.flatnonzero(times < start)
    if len(before):
        # the last event per key (controller number) wins, as it would on a live synth
        order = before[np.argsort(times[before], kind="stable")]
        _, last = np.unique(keys[order][::-1], return_index=True)
        keep[order[::-1][last]] = True
    return keep


def _default_workers() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def _render_parallel(jobs: list[tuple[bytes, int]], soundfont: Path, up: int, down: int) -> list[np.ndarray]:
    """First chunk in this process, the others in forked children.

    Plain fork with arguments inherited, not a pool: midirenderer holds the GIL while it renders,
    which would stall a pool's feeder threads until our own chunk was done.
    """
    import multiprocessing as mp

    serial = (len(jobs) == 1 or sys.platform != "linux" or "fork" not in mp.get_all_start_methods()
              or mp.current_process().daemon)  # daemonic processes may not have children
    if serial:
        return [_synthesize(m, str(soundfont), up, down) for m, _ in jobs]
    ctx = mp.get_context("fork")
    procs = []
    try:
        for midi_bytes, _ in jobs[1:]:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(send, midi_bytes, str(soundfont), up, down), daemon=True)
            p.start()
            send.close()
            procs.append((p, recv))
        results = [_synthesize(jobs[0][0], str(soundfont), up, down)]
        for p, recv in procs:
            try:
                status, payload = recv.recv()
            except EOFError:
                raise RuntimeError("a render worker died (out of memory?)") from None
            if status != "ok":
                raise RuntimeError(payload)
            shape, raw = payload
            results.append(np.frombuffer(raw, np.float32).reshape(shape))
        return results
    finally:
        for p, recv in procs:
            recv.close()
            if p.is_alive():
                p.terminate()
            p.join()


def _child(conn, midi_bytes, soundfont, up, down) -> None:
    try:
        audio = _synthesize(midi_bytes, soundfont, up, down)
        conn.send(("ok", (audio.shape, audio.tobytes())))
    except BaseException as e:  # report, never hang the parent
        conn.send(("error", str(e) or type(e).__name__))
    finally:
        conn.close()


def _finish(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Trim trailing silence (keeping a short tail, faded) and normalise the peak to PEAK."""
    peak = max(float(audio.max()), -float(audio.min())) if len(audio) else 0.0
    if peak <= 0:
        raise UserError("the SoundFont produced silence for this MIDI (no playable notes?)")
    # scan back from the end one second at a time: the silent tail is short, the piece may be long
    threshold = peak * 10 ** (SILENCE_DB / 20)
    last, hop = 0, sample_rate
    for stop in range(len(audio), 0, -hop):
        loud = np.flatnonzero(np.abs(audio[max(0, stop - hop):stop].ravel()) > threshold)
        if len(loud):
            last = max(0, stop - hop) + int(loud[-1]) // audio.shape[1]
            break
    end = min(len(audio), last + 1 + int(KEEP_TAIL * sample_rate))
    audio = audio[:end]
    fade = min(end, int(FADE * sample_rate))
    audio[end - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)[:, None]
    audio *= PEAK / peak
    return audio


def _output_format(out_path: Path, sample_rate: int) -> tuple[str, str]:
    fmt = FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot tell the audio format of {out_path.name}: use a .wav or .mp3 name")
    if fmt[0] == "MP3" and sample_rate not in MP3_RATES:
        raise UserError(f"MP3 cannot store {sample_rate} Hz; use one of {', '.join(map(str, sorted(MP3_RATES)))}")
    folder = out_path.parent
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable")
    return fmt


def _encode_mp3(audio: np.ndarray, sample_rate: int) -> bytes:
    """MP3 with LAME through lameenc: 192 kbit/s CBR at LAME quality 5.

    libsndfile's MP3 writer (also LAME) runs at its slowest settings: ~25x real time here against
    ~90x for this on the same audio (bench/render_speed.py), with no audible difference for piano.
    """
    import lameenc

    pcm = np.clip(np.rint(np.asarray(audio, dtype=np.float64) * 32767), -32768, 32767).astype("<i2")
    if pcm.ndim == 1:
        pcm = pcm[:, None]
    enc = lameenc.Encoder()
    enc.set_bit_rate(192)
    enc.set_in_sample_rate(sample_rate)
    enc.set_channels(pcm.shape[1])
    enc.set_quality(5)
    return bytes(enc.encode(np.ascontiguousarray(pcm).tobytes()) + enc.flush())


def _write(audio: np.ndarray, out_path: Path, sample_rate: int, fmt: tuple[str, str]) -> None:
    import soundfile

    try:
        with atomic_path(out_path) as tmp:
            if fmt[0] == "MP3" and find_spec("lameenc") is not None:
                tmp.write_bytes(_encode_mp3(audio, sample_rate))
            else:
                soundfile.write(str(tmp), audio, sample_rate, format=fmt[0], subtype=fmt[1])
    except (OSError, RuntimeError, soundfile.LibsndfileError) as e:
        raise UserError(f"cannot write {out_path}: {e}") from None


def render(midi, out_path, soundfont=None, sample_rate: int = 44100, workers: int | None = None) -> dict:
    """Render a MIDI file (path or symusic Score) to ``out_path`` (.wav or .mp3).

    ``out_path`` may also be a list, e.g. [x.wav, x.mp3]: one synthesis, several files.
    Returns {"path" (the first), "paths", "seconds" (audio length), "render_seconds" (wall time),
    "soundfont", "sample_rate", "channels", "workers"}. Pieces longer than PARALLEL_MIN_SECONDS
    are split across ``workers`` processes (default: the CPUs this process may use).
    """
    t0 = time.perf_counter()
    outs = [Path(p) for p in (out_path if isinstance(out_path, (list, tuple)) else [out_path])]
    if not outs:
        raise UserError("no output file given")
    up, down = _rate_ratio(sample_rate)
    fmts = [_output_format(p, sample_rate) for p in outs]
    sf_path = find_soundfont(soundfont)
    score = open_score(midi)
    if not any(len(t.notes) for t in score.tracks):
        raise UserError(f"{midi if isinstance(midi, (str, os.PathLike)) else 'the score'} has no notes to render")
    try:
        _load_soundfont(sf_path)  # read before forking so children share the bytes
    except OSError as e:
        raise UserError(f"cannot read SoundFont {sf_path}: {e.strerror or e}") from None

    seconds = max(float(t.end()) for t in score.tracks)
    n = workers if workers is not None else _default_workers()
    n = 1 if seconds < PARALLEL_MIN_SECONDS else max(1, int(n))
    align = math.lcm(down, ENGINE_BLOCK)
    jobs = _chunks(score, n, align)
    try:
        parts = _render_parallel(jobs, sf_path, up, down)
    except RuntimeError as e:
        raise UserError(f"cannot render with SoundFont {sf_path}: {e}") from None

    starts = [start // down * up for _, start in jobs]  # exact: start is a multiple of down
    audio = np.zeros((max(s + len(p) for s, p in zip(starts, parts)), 2), np.float32)
    for s, p in zip(starts, parts):
        audio[s:s + len(p)] += p
    audio = _finish(audio, sample_rate)
    for p, fmt in zip(outs, fmts):
        _write(audio, p, sample_rate, fmt)
    return {
        "path": str(outs[0]),
        "paths": [str(p) for p in outs],
        "seconds": len(audio) / sample_rate,
        "render_seconds": time.perf_counter() - t0,
        "soundfont": str(sf_path),
        "sample_rate": sample_rate,
        "channels": 2,
        "workers": len(jobs),
    }


def _run(args) -> int:
    from .files import output_folder

    out = args.output if args.output is not None else Path(args.midi).with_suffix(".wav")
    with output_folder(out):  # a missing --output folder is made, as generate makes its own
        info = render(args.midi, out, soundfont=args.soundfont, sample_rate=args.sample_rate, workers=args.workers)
    speed = info["seconds"] / max(info["render_seconds"], 1e-9)
    print(f"wrote {info['path']}: {info['seconds']:.1f} s of audio in {info['render_seconds']:.2f} s "
          f"({speed:.0f}x real time, SoundFont {Path(info['soundfont']).name})")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", type=Path, metavar="IN.mid", help="MIDI file to render")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="OUT.wav or OUT.mp3 (default: IN.wav next to the MIDI file)")
    p.add_argument("--soundfont", type=Path, default=None,
                   help=f"SF2 SoundFont (default: ${SOUNDFONT_ENV}, a system General MIDI one, "
                        "or the small one bundled with pretty_midi)")
    p.add_argument("--sample_rate", type=int, default=44100, help="output sample rate in Hz (default 44100)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for pieces longer than 20 s (default: all CPUs)")


def add_parser(sub) -> None:
    p = sub.add_parser("render", help="render a MIDI file to WAV or MP3 with a SoundFont",
                       description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=_run)


def main(argv=None) -> int:
    from .cli import run

    p = argparse.ArgumentParser(prog="audio.py", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(_run, args)


if __name__ == "__main__":
    sys.exit(main())
