"""Play-along latency: request -> response for an 8-s answer to 10 s of playing, through HTTP.

    python bench/continue_latency.py [--checkpoint DIR] [--runs 15] [--peer_runs 5]

A real studio (uvicorn on 127.0.0.1, the shipped model and the SoundFont loaded and warmed up)
answers POST /api/continue; the clock runs from sending the request to having read the whole
answer (notes and file URLs; the answer's WAV is written by then, its MP3 follows: the MP3 column
is when its URL has been fetched). The peer, in the same run and on the same playing, is the job
queue the studio had before: POST /api/generate_with_primer with the playing as a MIDI file, then
polling /api/jobs/{id} as the page does (every 0.4 s) until done; the same with 0.05-s polling
shows what is left once polling costs nothing. Goal (issue 15): median <= 0.5 s on this 2-core CPU.
The answer runs on one thread; its CPU time (timing.cpu_s) is printed beside the wall time, since
on a CPU shared with other busy processes the wall time also counts waiting for a core.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def playing(seconds=10.0, seed=0):
    """10 s of plausible two-handed playing: a melody in eighths over a chord on every beat."""
    rng = np.random.default_rng(seed)
    notes, t, pitch = [], 0.0, 72
    while t < seconds - 0.25:
        pitch = int(np.clip(pitch + rng.choice([-4, -2, -1, 1, 2, 3, 5]), 64, 84))
        notes.append([pitch, round(t, 3), round(t + 0.22, 3), int(rng.integers(60, 96))])
        if round(t * 4) % 2 == 0:  # a beat: a left-hand chord
            root = [48, 53, 55, 50][int(t / 2) % 4]
            notes += [[root + k, round(t, 3), round(t + 0.45, 3), 55] for k in (0, 4, 7)]
        t += 0.25
    return notes


def midi_bytes(notes):
    from classical_music.notes import Notes, notes_to_score

    a = np.array(notes, dtype=float)
    score = notes_to_score(Notes(a[:, 1], a[:, 2], a[:, 0].astype(np.int16), a[:, 3].astype(np.int16)))
    return score.dumps_midi()


class Client:
    def __init__(self, port):
        self.port, self.conn = port, http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError):
                # the server closed an idle keep-alive connection (under load, past uvicorn's 5 s): reconnect
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise


def post_json(c, path, obj):
    return c.request("POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})


def multipart(fields, midi):
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="primer"; filename="p.mid"\r\n'
                 f'Content-Type: audio/midi\r\n\r\n'.encode() + midi + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def ours(c, notes, seed):
    t0 = time.perf_counter()
    status, data = post_json(c, "/api/continue", {"notes": notes, "seconds": 8, "seed": seed})
    t1 = time.perf_counter()
    assert status == 200, data[:300]
    ans = json.loads(data)
    status, mp3 = c.request("GET", ans["files"]["mp3"])
    assert status == 200 and len(mp3) > 1000
    return t1 - t0, time.perf_counter() - t0, ans


def peer(c, midi, seed, poll):
    body, ctype = multipart({"seconds": "8", "seed": str(seed), "primer_seconds": "10"}, midi)
    t0 = time.perf_counter()
    status, data = c.request("POST", "/api/generate_with_primer", body, {"Content-Type": ctype})
    assert status == 202, data[:300]
    job_id = json.loads(data)["id"]
    while True:
        status, data = c.request("GET", f"/api/jobs/{job_id}")
        job = json.loads(data)
        if job["status"] in ("done", "error"):
            assert job["status"] == "done", job
            return time.perf_counter() - t0
        time.sleep(poll)


def stages(studio, notes, runs=5):
    """CPU time per stage of one answer, in this thread: forward over the playing, sampling, audio."""
    import torch

    from classical_music.audio import render
    from classical_music.generate import primer_tokens, sample
    from classical_music.notes import Notes, notes_to_score
    from classical_music.web.live import check_notes

    model = studio.model()
    tok = model.tokenizer
    prefix = primer_tokens(tok, check_notes(notes))
    out = {"forward": [], "sampling": [], "audio": []}
    events = []
    wav = Path(studio.output_dir) / "stage.wav"
    for seed in range(runs + 1):  # the first is a warm-up
        c = time.thread_time()
        with torch.inference_mode():
            model(torch.as_tensor(prefix).unsqueeze(0))
        forward = time.thread_time() - c
        c = time.thread_time()
        new = sample(model, tok, prefix, seconds=8, seed=seed)[0]
        sampling = time.thread_time() - c - forward  # sample() runs the same forward first
        both = tok.decode(np.concatenate([prefix, new]))
        k = both.onset >= float(np.sum(tok.shift_steps(prefix))) / tok.steps_per_second - 1e-9
        t0 = both.onset[k].min()
        c = time.thread_time()
        render(notes_to_score(Notes(both.onset[k] - t0, both.offset[k] - t0, both.pitch[k], both.velocity[k])), wav,
               sample_rate=48000, instrument=studio.instrument, reverb=studio.reverb)
        audio = time.thread_time() - c
        if seed:
            out["forward"].append(forward)
            out["sampling"].append(sampling)
            out["audio"].append(audio)
            events.append(len(new))
    return {k: statistics.median(v) for k, v in out.items()}, len(prefix), int(statistics.median(events))


def row(name, xs, extra=""):
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"| {name} | {len(xs)} | {statistics.median(xs):.3f} | {p90:.3f} | {xs[0]:.3f} | {xs[-1]:.3f} | {extra} |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--peer_runs", type=int, default=5)
    ap.add_argument("--soundfont", type=Path, default=None, help="play the answers with this SF2 (default: the grand)")
    args = ap.parse_args()

    import uvicorn

    from classical_music.web import create_app

    out = tempfile.mkdtemp(prefix="continue-bench-")
    app = create_app(args.checkpoint, out, preload=True, keep_jobs=100, soundfont=args.soundfont)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    c = Client(port)
    notes = playing()
    midi = midi_bytes(notes)
    load0 = os.getloadavg()
    for seed in range(2):  # warm up: first-call costs (allocations, samples loading) are not latency
        ours(c, notes, 1000 + seed)
    lat, mp3, compose, render, events, cpu_s = [], [], [], [], [], []
    for seed in range(args.runs):
        a, b, ans = ours(c, notes, seed)
        lat.append(a)
        mp3.append(b)
        compose.append(ans["timing"]["compose_s"])
        render.append(ans["timing"]["render_s"])
        events.append(len(ans["notes"]))
        cpu_s.append(ans["timing"]["cpu_s"])
    queue_page = [peer(c, midi, s, 0.4) for s in range(args.peer_runs)]
    queue_fast = [peer(c, midi, s, 0.05) for s in range(args.peer_runs)]
    load1 = os.getloadavg()
    server.should_exit = True
    cpu_stages, n_prefix, n_new = stages(app.state.studio, notes)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; "
          f"load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"playing: {len(notes)} notes in 10 s; answer: 8 s, {statistics.median(events):.0f} notes (median); "
          f"instrument: {app.state.studio.instrument.name}\n")
    print("| path | runs | median s | p90 s | min s | max s | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(row("POST /api/continue (ours): answer + WAV", lat,
              f"compose {statistics.median(compose):.3f} s + audio {statistics.median(render):.3f} s (medians)"))
    print(row("... CPU time of the answering thread", cpu_s, "= its wall time with a core to itself"))
    print(row("... until its MP3 is fetched", mp3, "MP3 encoded after the answer"))
    print(row("job queue: generate_with_primer + polling every 0.4 s (the page)", queue_page, "MIDI, WAV, MP3, PNG"))
    print(row("job queue: generate_with_primer + polling every 0.05 s", queue_fast, "MIDI, WAV, MP3, PNG"))
    print(f"\nCPU time per stage (medians of 5, one thread): forward over {n_prefix} played tokens "
          f"{cpu_stages['forward']:.3f} s, sampling {n_new} answer events (median) {cpu_stages['sampling']:.3f} s, "
          f"8-s WAV at 48 kHz {cpu_stages['audio']:.3f} s")
    print(f"\nmedian speed-up over the page's job path: {statistics.median(queue_page) / statistics.median(lat):.1f}x; "
          f"goal median <= 0.5 s: {'met' if statistics.median(lat) <= 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
