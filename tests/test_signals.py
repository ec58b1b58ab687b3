"""SIGTERM and Ctrl-C (issue 27, item 3): every command says "stopped" in one line, exits 128 +
the signal, and takes its forked children down with it; serve's port is free for the next serve.

Each command runs in a subprocess whose slow part is made slower (and marked with a file) by a
small wrapper, so the signal always lands mid-work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import scale, write_midi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for child processes")

REPO = Path(__file__).resolve().parents[1]

# argv: MARKER SLOW_PART classical-music arguments...
WRAPPER = textwrap.dedent('''
    import os, sys, time
    marker, part, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

    def arrived():
        open(marker + "." + str(os.getpid()), "w").close()

    if part == "synth":  # every SoundFont chunk, in this process and in the forked children
        import classical_music.audio.sf2 as sf2
        def slow(*a, **k):
            arrived()
            time.sleep(120)
        sf2._synthesize = slow
    elif part == "prepare":  # each pool worker's file
        import classical_music.data.prepare as prep
        def slow(path):
            arrived()
            time.sleep(120)
            return "never"
        prep.encode_file = slow
    elif part == "sample":  # generate's sampling
        import classical_music.generate.composer as gen
        def slow(*a, **k):
            arrived()
            time.sleep(120)
        gen.sample = slow
    elif part == "lanes":  # evaluate's lanes: a chunk every 50 ms for ever
        import classical_music.scoring as scoring
        def slow(forward, items, on_chunk=None, **k):
            arrived()
            list(items)
            while True:
                time.sleep(0.05)
                on_chunk(1)
            yield
        scoring.score = slow
    from classical_music import cli
    sys.exit(cli.main(argv))
''')


def descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = {int(c) for t in os.listdir(f"/proc/{p}/task")
                    for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()}
        except OSError:
            continue
        out |= kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its parent's reaping is left


def start(tmp_path, part, *argv):
    marker = str(tmp_path / "arrived")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, marker, part, *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def wait_for(predicate, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def arrivals(marker) -> set[int]:
    folder = Path(marker).parent
    return {int(p.suffix[1:]) for p in folder.glob(Path(marker).name + ".*")}


def stop_and_check(proc, sig=signal.SIGTERM, timeout=90.0):
    """Send sig; the process must exit 128 + sig saying "stopped", and leave no child running."""
    children = descendants(proc.pid)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running {timeout} s after the signal: {err[-2000:]}")
    try:
        wait_for(lambda: not any(alive(c) for c in children), 30, "the children to stop")
    finally:
        for c in children:
            if alive(c):
                os.kill(c, signal.SIGKILL)
    assert proc.returncode == 128 + sig, (proc.returncode, err[-2000:])
    assert err.strip().splitlines()[-1:] == ["stopped"] and "Traceback" not in err, err[-2000:]
    return children


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from classical_music.model import ComposerLSTM, ModelConfig
    from classical_music.tokenizer import get_tokenizer

    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=1))
    with torch.no_grad():
        model.head.bias[tok.eos_id] = -20
        model.head.bias[tok.note_on + 48:tok.note_on + 84] = 3.0
    path = tmp_path_factory.mktemp("ck") / "best"
    model.save_pretrained(path, tokenizer=tok)
    return path


def long_piece(tmp_path) -> Path:
    return write_midi(tmp_path / "long.mid", scale(120, step=0.5))  # 60 s: split across workers


def sf2() -> str:
    """A SoundFont: its backend splits a long piece across forked workers (the SFZ one does not fork)."""
    from classical_music.soundfont import find_soundfont

    return str(find_soundfont())


def test_sigterm_of_render_takes_its_workers_down(tmp_path):
    proc, marker = start(tmp_path, "synth", "render", long_piece(tmp_path), "-o", tmp_path / "x.wav",
                         "--soundfont", sf2())
    wait_for(lambda: len(arrivals(marker)) >= 2, what="the parent and a forked worker to render")
    children = stop_and_check(proc)
    assert children & arrivals(marker)  # a forked worker was rendering, and is gone
    assert not (tmp_path / "x.wav").exists() and not list(tmp_path.glob(".x.wav.*"))


def test_sigint_of_prepare_stops_its_pool(tmp_path):
    src = tmp_path / "src"
    for i in range(24):  # the pool hands out 8 files at a time: every worker gets some
        write_midi(src / f"{i}.mid", scale(8))
    proc, marker = start(tmp_path, "prepare", "data", "prepare", src, "--out", tmp_path / "cache",
                         "--workers", "2", "--no_progress")
    wait_for(lambda: len(arrivals(marker)) >= 2, what="both workers to start")
    assert arrivals(marker) <= descendants(proc.pid)
    stop_and_check(proc, signal.SIGINT)  # Ctrl-C; SIGTERM is the same path (the tests below)


def test_sigterm_of_generate_and_evaluate_says_stopped(tmp_path, ckpt):
    out = tmp_path / "o.mid"
    proc, marker = start(tmp_path, "sample", "generate", "--checkpoint", ckpt, "--output", out, "--mp3")
    wait_for(lambda: arrivals(marker), what="sampling to start")
    stop_and_check(proc)
    assert not out.exists() and not out.with_suffix(".mp3").exists()
    for i in range(4):
        write_midi(tmp_path / "set" / f"{i}.mid", scale(16))
    proc, marker = start(tmp_path / "set", "lanes", "evaluate", tmp_path / "set", "--checkpoint", ckpt,
                         "--threads", "2", "--no_progress")
    wait_for(lambda: arrivals(marker), what="the lanes to start")
    stop_and_check(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_of_serve_while_a_job_renders_frees_the_port(tmp_path, ckpt):
    import http.client
    import json

    port = free_port()
    proc, marker = start(tmp_path, "synth", "serve", "--port", port, "--checkpoint", ckpt,
                         "--output_dir", tmp_path / "studio", "--soundfont", sf2())

    def post():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", "/api/generate", json.dumps({"seconds": 21, "seed": 1}),
                      {"Content-Type": "application/json", "Host": f"127.0.0.1:{port}"})
            return c.getresponse().status == 202
        except OSError:
            return False

    wait_for(post, what="the studio to accept a job")
    wait_for(lambda: len(arrivals(marker)) >= 2, what="the job to render in a forked worker")
    children = stop_and_check(proc)
    assert children & arrivals(marker)
    with socket.socket() as s:  # the next serve can listen here
        s.bind(("127.0.0.1", port))
