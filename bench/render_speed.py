"""Audio rendering speed: our renderer against peers, on the same files in the same run.

    python bench/render_speed.py [--files 6] [--max_seconds 400] [--workers N] [--mp3] [--dsp_only]

First two small tables (--dsp_only: only these): resampling 60 s of 48 kHz stereo to 44.1 kHz
with the polyphase Kaiser-sinc resampler audio.py used to have (kept here as the peer) and with
libsoxr (audio.resample now: HQ; VHQ beside it), timed and compared against the exact signal
(40 random tones from 20 Hz to 19 kHz, computed at the output rate); then decoding
midirenderer's WAV bytes with our RIFF reader (audio._decode_wav) and with soundfile.

Engines, each rendering every file once (after one warm-up render):
  * ``render`` — classical_music.audio.render to a 44.1 kHz stereo WAV: midirenderer (Rust
    SoundFont synth) + the SoundFont it finds, split across processes, resampled, trimmed,
    normalised, written. Measured with the default worker count and with one worker.
  * ``midirenderer raw`` — one render_wave_from call on the file as is: the bare engine in one
    process, 48 kHz 16-bit, no resampling, normalising or writing. The ceiling for one core.
  * with --mp3, ``render`` again with libsndfile's MP3 writer in place of lameenc (the encoder peer).
  * ``pretty_midi sine`` — PrettyMIDI.synthesize(44100): pretty_midi's built-in sine-wave
    synthesizer, mono, no SoundFont. A floor for "just make a sound".
  * ``pretty_midi fluidsynth`` — only when pyfluidsynth and libfluidsynth are installed.

Files come from ../shared/data/classical-piano (spread over lengths, up to --max_seconds), or
synthetic scales when that folder is absent. Goal (issue): rendering >= 100x real time on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from classical_music import audio
from classical_music.audio import encode, sf2
from classical_music.soundfont import find_soundfont

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "classical-piano"


def pick_files(n: int, max_seconds: float, tmp: Path) -> list[Path]:
    meta = SHARED / "metadata.csv"
    if meta.exists():
        with open(meta, newline="") as f:
            rows = [r for r in csv.DictReader(f) if 10 <= float(r["seconds"]) <= max_seconds]
        rows.sort(key=lambda r: float(r["seconds"]))
        # evenly spread over lengths, so short and long pieces both count
        idx = np.linspace(0, len(rows) - 1, n).round().astype(int)
        return [SHARED / rows[i]["path"] for i in dict.fromkeys(idx)]
    import symusic

    files = []
    for k in range(n):
        score = symusic.Score(480)
        track = symusic.Track(program=0)
        secs = 30 * (k + 1)
        for i in range(secs * 8):  # eighth notes at 120 bpm with a left-hand chord every bar
            track.notes.append(symusic.Note(i * 240, 240, 60 + (i * 5) % 24, 50 + (i * 13) % 60))
            if i % 8 == 0:
                for p in (36, 43, 48):
                    track.notes.append(symusic.Note(i * 240, 1920, p + (i // 8) % 5, 60))
        for bar in range(secs // 2):
            track.controls.append(symusic.ControlChange(bar * 1920 + 10, 64, 127))
            track.controls.append(symusic.ControlChange(bar * 1920 + 1900, 64, 0))
        score.tracks.append(track)
        path = tmp / f"synthetic_{secs}s.mid"
        score.dump_midi(str(path))
        files.append(path)
    return files


def engines(args, tmp: Path, soundfont: Path):
    sf_bytes = soundfont.read_bytes()
    workers = args.workers or sf2.default_workers()

    def ours(n):
        def run(path):
            out = tmp / ("out.mp3" if args.mp3 else "out.wav")
            info = audio.render(path, out, soundfont=soundfont, workers=n)
            return info["seconds"]
        return run

    def raw(path):
        import midirenderer

        wav = midirenderer.render_wave_from(sf_bytes, path.read_bytes())
        return (len(wav) - 44) / 4 / 48000

    def sine(path):
        import pretty_midi

        return len(pretty_midi.PrettyMIDI(str(path)).synthesize(44100)) / 44100

    fmt = "MP3" if args.mp3 else "WAV"
    yield f"render, {workers} workers, 44.1 kHz {fmt}", ours(workers)
    if workers != 1:
        yield f"render, 1 worker, 44.1 kHz {fmt}", ours(1)
    if args.mp3:
        def libsndfile_mp3(path):  # the same render, with libsndfile's MP3 writer instead of lameenc
            real = encode.find_spec
            encode.find_spec = lambda name: None if name == "lameenc" else real(name)
            try:
                return ours(workers)(path)
            finally:
                encode.find_spec = real

        yield f"render, {workers} workers, MP3 by libsndfile (peer encoder)", libsndfile_mp3
    yield "midirenderer raw, 1 call, 48 kHz in memory", raw
    yield "pretty_midi sine (no SoundFont), mono", sine
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth)

        import pretty_midi

        def fluid(path):
            return len(pretty_midi.PrettyMIDI(str(path)).fluidsynth(44100, str(soundfont))) / 44100

        yield "pretty_midi fluidsynth", fluid
    except ImportError:
        pass


def kaiser_resample(x: np.ndarray, up: int, down: int, zeros: int = 16, rolloff: float = 0.92) -> np.ndarray:
    """The polyphase Kaiser-windowed sinc resampler audio.py had before soxr (the peer)."""
    import math

    n, c = x.shape
    n_out = -(-n * up // down)
    scale = min(1.0, up / down)
    w = int(math.ceil(zeros / scale))
    length = down + 2 * w
    tau = (np.arange(up) * down / up)[None, :] - (np.arange(length) - w)[:, None]
    window = np.i0(8.0 * np.sqrt(np.clip(1 - (tau / w) ** 2, 0, None))) / np.i0(8.0)
    kern = np.sinc(scale * rolloff * tau) * window
    kern[np.abs(tau) >= w] = 0
    kern = (kern / kern.sum(axis=0, keepdims=True)).astype(np.float32)
    blocks = -(-n_out // up)
    xt = np.zeros((c, blocks * down + length), np.float32)
    xt[:, w:w + n] = x.T
    s = xt.strides[1]
    rows = np.lib.stride_tricks.as_strided(xt, shape=(c, blocks, length), strides=(xt.strides[0], down * s, s))
    y = rows.reshape(c * blocks, length) @ kern
    return np.ascontiguousarray(y.reshape(c, blocks * up)[:, :n_out].T)


def best_of(fn, k=5):
    fn()
    times = []
    for _ in range(k):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def dsp_tables(soundfont: Path, files: list[Path]) -> None:
    import io

    import soundfile
    import soxr

    rng = np.random.default_rng(0)
    phase, amp = rng.uniform(0, 2 * np.pi, 40), rng.uniform(0.005, 0.02, 40)
    freq = rng.uniform(20, 19000, 40)
    low = freq / 19000 * 10000  # the same tones squeezed below 10 kHz, where most of a piano's energy is

    def tones(t, f=freq):
        return np.stack([(amp * np.sin(2 * np.pi * f * (t[:, None] + lag) + phase)).sum(1) for lag in (0, 1e-3)], 1)

    seconds, up, down = 60, 147, 160
    t_in, t_out = np.arange(48000 * seconds) / 48000, np.arange(44100 * seconds) / 44100
    x, exact = tones(t_in).astype(np.float32), tones(t_out)
    x_low, exact_low = tones(t_in[:48000 * 5], low).astype(np.float32), tones(t_out[:44100 * 5], low)
    inner = slice(4410, -4410)  # the edges are where any resampler sees silence beyond the signal
    print(f"Resampling {seconds} s of 48 kHz stereo to 44.1 kHz (best of 5); error: RMS of (output - exact "
          "signal) over RMS of the signal, edges left out\n")
    print("| resampler | ms | x real time | error, tones to 19 kHz (dB) | error, tones to 10 kHz (dB) |")
    print("|---|---:|---:|---:|---:|")
    def db(y, ref):
        err = y[inner] - ref[inner]
        return 10 * np.log10((err ** 2).mean() / (ref[inner] ** 2).mean())

    for name, fn in (("polyphase Kaiser sinc (ours before)", lambda z: kaiser_resample(z, up, down)),
                     ("soxr HQ (audio.resample now)", lambda z: sf2.resample(z, up, down)),
                     ("soxr VHQ", lambda z: soxr.resample(z, 48000, 44100, quality="VHQ"))):
        y, wall = best_of(lambda: fn(x))
        print(f"| {name} | {wall * 1e3:.0f} | {seconds / wall:.0f}x | {db(y, exact):.1f} | "
              f"{db(fn(x_low), exact_low):.1f} |", flush=True)

    import midirenderer

    wav = midirenderer.render_wave_from(soundfont.read_bytes(), files[-1].read_bytes())
    print(f"\nDecoding midirenderer's WAV bytes ({len(wav) / 2**20:.1f} MB, {files[-1].name}; best of 5)\n")
    print("| decoder | ms | same samples |")
    print("|---|---:|---|")
    (ref, _), wall = best_of(lambda: sf2._decode_wav(wav))
    print(f"| audio._decode_wav (ours) | {wall * 1e3:.1f} | - |")
    (got, _), wall = best_of(lambda: soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True))
    print(f"| soundfile.read(BytesIO) | {wall * 1e3:.1f} | {np.array_equal(ref, got)} |\n", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--max_seconds", type=float, default=400.0, help="skip corpus pieces longer than this")
    ap.add_argument("--workers", type=int, default=None, help="processes for render (default: all CPUs)")
    ap.add_argument("--mp3", action="store_true", help="time MP3 output instead of WAV")
    ap.add_argument("--soundfont", type=Path, default=None)
    ap.add_argument("--dsp_only", action="store_true", help="only the resampler and WAV decoder tables")
    args = ap.parse_args()

    soundfont = find_soundfont(args.soundfont)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.2f} before the run; "
          f"SoundFont {soundfont.name} ({soundfont.stat().st_size / 2**20:.1f} MB)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        files = pick_files(args.files, args.max_seconds, tmp)
        print(f"files: {len(files)} from {'the shared corpus' if SHARED.exists() else 'synthetic scales'}")
        print()
        dsp_tables(soundfont, files)
        if args.dsp_only:
            return
        # CPU seconds (this process and its render workers) alongside wall time: on a machine shared
        # with other jobs, wall time understates what the cores can do, CPU time does not
        print("| engine | files | music s | wall s | x real time | slowest file x real time "
              "| CPU s | music s per CPU s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, fn in engines(args, tmp, soundfont):
            fn(files[0])  # warm-up: imports, SoundFont read into the page cache
            music = wall = 0.0
            worst = np.inf
            c0 = cpu_seconds()
            for f in files:
                t = time.perf_counter()
                secs = fn(f)
                dt = time.perf_counter() - t
                music, wall, worst = music + secs, wall + dt, min(worst, secs / dt)
            cpu = cpu_seconds() - c0
            print(f"| {name} | {len(files)} | {music:.1f} | {wall:.2f} | {music / wall:.0f}x | {worst:.0f}x "
                  f"| {cpu:.2f} | {music / cpu:.0f} |", flush=True)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\nload average after the run: {load:.2f}")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


if __name__ == "__main__":
    main()
