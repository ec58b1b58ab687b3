"""The grand piano beside TimGM6mb, in one run: single notes, a composed 60-s piece, six pieces' loudness,
the memory of `serve` with each loaded and (--hour) `generate --seconds 3600 --mp3`.

    OMP_NUM_THREADS=1 python bench/piano.py [--piece_seconds 60] [--hour]

Needs `classical-music piano install`; prints a Markdown table for docs/benchmarks.md.
Measures (issue 24): brightness = spectral centroid / f0 of A4's first 0.5 s, velocity 30 -> 110;
decay of a held A4 (dB/s, fitted 0.5-3 s); pedal ring-on = level 1 s after key-up with the pedal
held minus without; damping = level drop 0.3 s after key-up (no pedal); speed = music seconds per
wall second of render() on one thread (sampler or SoundFont + reverb + master), cold (first render
in a fresh process, samples loading) and warm (again); peak dBFS; loudness of six pieces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import write_midi  # noqa: E402

from classical_music import audio, piano, soundfont  # noqa: E402

RATE = 48000
PIECES = sorted((ROOT / "docs" / "samples").glob("*.mid"))


def level(x, a, b):
    seg = x[int(a * RATE): int(b * RATE)]
    n = max(int(b * RATE) - int(a * RATE), 1)
    return 10 * np.log10(np.sum(np.square(seg)) / (2 * n) + 1e-20)


def note(inst, tmp, pitch, vel, dur, pedal=None, name="n"):
    import soundfile as sf

    mid = write_midi(tmp / f"{name}.mid", [(pitch, 0.0, dur, vel)], pedals=[pedal] if pedal else ())
    audio.render(mid, tmp / f"{name}.wav", instrument=inst, reverb=0, sample_rate=RATE)
    x, _ = sf.read(tmp / f"{name}.wav", dtype="float64")
    return x


def brightness(x, f0=440.0):
    m = x[: RATE // 2].mean(axis=1)
    spec = np.abs(np.fft.rfft(m * np.hanning(len(m)))) ** 2
    f = np.fft.rfftfreq(len(m), 1 / RATE)
    return float((spec * f).sum() / spec.sum()) / f0


def single_notes(inst, tmp) -> dict:
    soft, loud = note(inst, tmp, 69, 30, 1.0, name="soft"), note(inst, tmp, 69, 110, 1.0, name="loud")
    held = note(inst, tmp, 69, 80, 4.0, name="held")
    t = np.arange(0.5, 3.0, 0.1)
    lv = np.array([level(held, a, a + 0.1) for a in t])
    decay = -np.polyfit(t, lv, 1)[0]
    dry = note(inst, tmp, 69, 80, 0.5, name="dry")
    wet = note(inst, tmp, 69, 80, 0.5, pedal=(0.0, 3.0), name="wet")
    return {"brightness_30": brightness(soft), "brightness_110": brightness(loud),
            "brightness_rise": brightness(loud) / brightness(soft) - 1, "decay_db_s": float(decay),
            "pedal_ring_db": level(wet, 1.5, 1.6) - level(dry, 1.5, 1.6),
            "damping_db_0.3s": level(dry, 0.4, 0.5) - level(dry, 0.8, 0.9)}


def compose_piece(seconds: float, tmp: Path) -> Path:
    from classical_music.generate import GenerateConfig, compose

    out = tmp / "piece60.mid"
    compose(GenerateConfig(output=out, seconds=seconds, seed=5, precision="float32"))
    return out


def speed(inst, midi: Path, tmp: Path) -> dict:
    # cold: a fresh process (the samples load as notes need them); warm: again in that process
    code = ("import json, sys, time; from classical_music import audio; from pathlib import Path;"
            "inst = audio.find_instrument(sys.argv[2] or None, sys.argv[3] or None, quiet=True); r = [];"
            "exec('for k in range(2):\\n t, c = time.perf_counter(), time.process_time()"
            "\\n i = audio.render(sys.argv[1], sys.argv[4], instrument=inst, workers=1)"
            "\\n r.append((i[\"seconds\"], time.perf_counter() - t, time.process_time() - c, i[\"peak_dbfs\"],"
            " i[\"loudness_lufs\"]))');"
            "print(json.dumps(r))")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    sfz, sf2 = (str(inst.path), "") if inst.kind == "sfz" else ("", str(inst.path))
    out = subprocess.run([sys.executable, "-c", code, str(midi), sfz, sf2, str(tmp / "piece.wav")],
                         env=env, capture_output=True, text=True, check=True)
    (s0, w0, c0, p0, l0), (s1, w1, c1, p1, l1) = json.loads(out.stdout)
    return {"cold_x": s0 / w0, "warm_x": s1 / w1, "cold_cpu_x": s0 / c0, "warm_cpu_x": s1 / c1,
            "peak_dbfs": max(p0, p1), "lufs": l1, "seconds": s1}


def loudness(inst, tmp: Path) -> list[float]:
    import pyloudnorm
    import soundfile as sf

    out = []
    for mid in PIECES:
        wav = tmp / f"{mid.stem}.wav"
        audio.render(mid, wav, instrument=inst)
        x, rate = sf.read(wav, dtype="float64")
        out.append(pyloudnorm.Meter(rate).integrated_loudness(x))
    return out


def serve_rss(inst) -> float:
    """RSS (MB) of `classical-music serve` once it is up with this instrument loaded (and warmed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flag = ["--piano", str(inst.path)] if inst.kind == "sfz" else ["--soundfont", str(inst.path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as out:
        p = subprocess.Popen([str(ROOT / ".venv" / "bin" / "classical-music"), "serve", "--port", str(port),
                              "--output_dir", out, *flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                line = p.stdout.readline()
                if "studio at" in line:
                    break
            time.sleep(2)
            status = Path(f"/proc/{p.pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        finally:
            p.terminate()
            p.wait(30)


def hour(tmp: Path) -> dict:
    """generate --seconds 3600 --mp3 with the default instrument: peak RSS (MB) and wall time."""
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", str(ROOT / ".venv" / "bin" / "classical-music"), "generate",
                          "--output", str(tmp / "hour.mid"), "--seconds", "3600", "--mp3", "--seed", "5",
                          "--threads", "1"], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    import soundfile as sf

    return {"peak_rss_mb": rss, "wall_s": wall, "rc": out.returncode,
            "mp3_seconds": sf.info(tmp / "hour.mp3").duration if out.returncode == 0 else 0.0}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--piece_seconds", type=float, default=60.0)
    p.add_argument("--hour", action="store_true", help="also generate --seconds 3600 --mp3 (several minutes)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    sfz, problem = piano.installed()
    if sfz is None:
        sys.exit(f"bench/piano.py: {problem}")
    grand = audio.find_instrument(piano=sfz)
    gm = audio.find_instrument(soundfont=soundfont.pretty_midi_soundfont())
    res = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        piece = compose_piece(args.piece_seconds, tmp)
        for name, inst in (("Salamander grand (pysfizz)", grand), ("TimGM6mb (midirenderer)", gm)):
            sub = tmp / name.split()[0]
            sub.mkdir()
            r = single_notes(inst, sub)
            r.update(speed(inst, piece, sub))
            r["loudness"] = loudness(inst, sub)
            r["serve_rss_mb"] = serve_rss(inst)
            res[name] = r
            print(name, json.dumps(r), file=sys.stderr, flush=True)
        if args.hour:
            res["hour"] = hour(tmp)
    rows = [("brightness A4 vel 30 -> 110 (centroid/f0)", ">= +10 %",
             lambda r: f"{r['brightness_30']:.2f} -> {r['brightness_110']:.2f} ({100 * r['brightness_rise']:+.0f} %)"),
            ("held A4 decay, 0.5-3 s", "5-12 dB/s", lambda r: f"{r['decay_db_s']:.1f} dB/s"),
            ("pedal ring-on, 1 s after key-up", ">= 10 dB",
             lambda r: f"{r['pedal_ring_db']:+.1f} dB" if r["pedal_ring_db"] < 100 else "+100 dB or more (silent without)"),
            ("key-up damping within 0.3 s (no pedal)", "damped", lambda r: f"-{r['damping_db_0.3s']:.1f} dB"),
            (f"render speed, composed {args.piece_seconds:.0f}-s piece, 1 thread, cold: music s per CPU s (wall)",
             ">= 20x", lambda r: f"{r['cold_cpu_x']:.1f}x ({r['cold_x']:.1f}x)"),
            ("the same, warm (samples loaded: serve, play-along)", ">= 20x",
             lambda r: f"{r['warm_cpu_x']:.1f}x ({r['warm_x']:.1f}x)"),
            ("peak", "<= -1 dBFS", lambda r: f"{r['peak_dbfs']:.2f} dBFS"),
            ("loudness of 6 pieces (pyloudnorm)", "-16 +/- 1 LU",
             lambda r: f"{min(r['loudness']):.2f} .. {max(r['loudness']):.2f} LUFS"),
            ("RSS of `serve`, instrument loaded", "report", lambda r: f"{r['serve_rss_mb']:.0f} MB")]
    names = [k for k in res if k != "hour"]
    print("| measure | target | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label, target, fmt in rows:
        print(f"| {label} | {target} | " + " | ".join(fmt(res[n]) for n in names) + " |")
    if "hour" in res:
        h = res["hour"]
        print(f"\n`generate --seconds 3600 --mp3 --threads 1` (grand): peak RSS {h['peak_rss_mb']:.0f} MB "
              f"(target <= 1,536 MB), {h['mp3_seconds']:.0f} s of MP3 in {h['wall_s']:.0f} s, exit {h['rc']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
