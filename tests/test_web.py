"""The browser studio's API: compose, poll, download; validation; file serving; the job queue."""

import asyncio
import threading
import time

import pytest
import symusic
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from classical_music.model import ComposerLSTM, ModelConfig  # noqa: E402
from classical_music.tokenizer import get_tokenizer  # noqa: E402
from classical_music.web import create_app  # noqa: E402
from classical_music.web.studio import SAMPLING_SHARE  # noqa: E402

from conftest import scale, write_midi  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=16, hidden_size=32, num_layers=2))
    with torch.no_grad():  # an untrained model would otherwise stop at once
        model.head.bias[tok.eos_id] = -20
    path = tmp_path_factory.mktemp("ck") / "best"
    model.save_pretrained(path, tokenizer=tok)
    # One thread: a tiny model's steps are all overhead, and spinning threads crawl on a busy CI box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield path
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(checkpoint, tmp_path_factory):
    app = create_app(checkpoint, tmp_path_factory.mktemp("studio"), max_upload_bytes=64 * 1024)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def wait(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "error"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


@pytest.fixture(scope="module")
def done(client):
    r = client.post("/api/generate", json={"seconds": 2, "temperature": 1.0, "top_p": 0.95, "seed": 3,
                                           "num_samples": 2})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["id"])
    assert job["status"] == "done", job
    return job


MAGIC = {"midi": (b"MThd",), "wav": (b"RIFF",), "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
         "png": (b"\x89PNG",)}
TYPES = {"midi": "audio/midi", "wav": "audio/wav", "mp3": "audio/mpeg", "png": "image/png"}


def test_compose_poll_and_download_every_file(client, done):
    assert done["progress"] == 1.0 and "error" not in done
    assert len(done["variations"]) == 2
    assert done["files"] == done["variations"][0]["files"]
    assert done["variations"][0]["files"]["midi"] != done["variations"][1]["files"]["midi"]
    for v in done["variations"]:
        assert set(v["files"]) == {"midi", "wav", "mp3", "png"}
        for kind, url in v["files"].items():
            r = client.get(url)
            assert r.status_code == 200, url
            assert r.headers["content-type"].split(";")[0] == TYPES[kind]
            assert r.content.startswith(MAGIC[kind]), (kind, r.content[:8])
        midi = symusic.Score.from_midi(client.get(v["files"]["midi"]).content, ttype="second")
        assert 0 < midi.end() <= 2.0 + 1e-6
    assert client.get(done["files"]["wav"]).content[8:12] == b"WAVE"


def test_same_seed_same_piece(client, done):
    r = client.post("/api/generate", json={"seconds": 2, "top_p": 0.95, "seed": 3, "num_samples": 2})
    again = wait(client, r.json()["id"])
    for a, b in zip(again["variations"], done["variations"]):
        assert client.get(a["files"]["midi"]).content == client.get(b["files"]["midi"]).content


@pytest.mark.parametrize("body, field", [
    ({"seconds": 0}, "seconds"), ({"seconds": -1}, "seconds"), ({"seconds": 121}, "seconds"),
    ({"seconds": "long"}, "seconds"), ({"temperature": 0}, "temperature"), ({"temperature": -0.5}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"num_samples": 0}, "num_samples"),
    ({"num_samples": 5}, "num_samples"), ({"seed": -1}, "seed"), ({"sconds": 2}, "sconds"),
    # JSON strings and booleans are not numbers (lax parsing read "10" as 10 and true as 1)
    ({"seconds": "10"}, "seconds"), ({"seconds": True}, "seconds"), ({"temperature": "0.9"}, "temperature"),
    ({"top_p": False}, "top_p"), ({"num_samples": True}, "num_samples"), ({"num_samples": "2"}, "num_samples"),
    ({"seed": "7"}, "seed"), ({"seed": True}, "seed"), ({"seed": 1.5}, "seed"),
])
def test_invalid_values_are_422_with_a_message(client, body, field):
    before = len(client.app.state.studio.jobs)
    r = client.post("/api/generate", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and field in r.json()["detail"]
    assert len(client.app.state.studio.jobs) == before


@pytest.mark.parametrize("body", [b"{bad", b"[1]", b'{"seconds": NaN}', b'{"temperature": Infinity}'])
def test_malformed_bodies_are_422_with_a_message(client, body):
    r = client.post("/api/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


def test_limits_are_checked_on_the_form_route_too(client, tmp_path):
    primer = write_midi(tmp_path / "p.mid", scale(8)).read_bytes()
    for data in ({"seconds": "500"}, {"temperature": "0"}, {"top_p": "2"}, {"num_samples": "9"},
                 {"primer_seconds": "0"}, {"seconds": "nan"}):
        r = client.post("/api/generate_with_primer", data=data, files={"primer": ("p.mid", primer)})
        assert r.status_code == 422 and isinstance(r.json()["detail"], str), (data, r.text)


def raw_get(app, path):
    """GET with the path exactly as written: HTTP clients would resolve the dot segments first."""
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 1), "server": ("localhost", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def test_files_outside_the_job_are_never_served(client, done):
    job = done["id"]
    folder = client.app.state.studio.output_dir / job
    (folder / "secret.txt").write_text("not a result")
    for path in [f"/files/{job}/../../etc/passwd", f"/files/{job}/..%2F..%2Fetc%2Fpasswd",
                 f"/files/{job}/%2e%2e/%2e%2e/etc/passwd", f"/files/../{job}/piece_1.mid",
                 f"/files/{job}/secret.txt", f"/files/{job}/",
                 f"/files/{job}/piece_9.mid", f"/files/{'0' * 32}/piece_1.mid", "/files/x/%2Fetc%2Fpasswd"]:
        status, body = raw_get(client.app, path)
        assert status == 404, path
        assert b"root:" not in body and b"not a result" not in body
        assert client.get(path).status_code == 404, path
    assert client.get("/api/jobs/nope").status_code == 404


def test_non_midi_and_too_large_uploads_are_refused(client):
    r = client.post("/api/generate_with_primer", data={"seconds": "2"},
                    files={"primer": ("song.mid", b"<html>not music</html>")})
    assert r.status_code == 422 and "not a MIDI file" in r.json()["detail"]
    r = client.post("/api/generate_with_primer", data={"seconds": "2"},
                    files={"primer": ("song.mid", b"MThd\x00\x00\x00\x06garbage")})
    assert r.status_code == 422 and "MIDI" in r.json()["detail"]
    big = b"MThd" + bytes(70 * 1024)  # over this app's 64 KiB limit: caught after parsing
    r = client.post("/api/generate_with_primer", files={"primer": ("big.mid", big)})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    huge = b"MThd" + bytes(300 * 1024)  # caught by its Content-Length before parsing
    r = client.post("/api/generate_with_primer", files={"primer": ("huge.mid", huge)})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = client.post("/api/generate_with_primer", data={"seconds": "2"})
    assert r.status_code == 422 and "primer" in r.json()["detail"]


def test_primer_upload_opens_the_piece(client, tmp_path):
    primer = write_midi(tmp_path / "primer.mid", scale(16, base=72))  # 4 s of music
    r = client.post("/api/generate_with_primer", data={"seconds": "2", "seed": "5", "primer_seconds": "2"},
                    files={"primer": ("my primer.mid", primer.read_bytes(), "audio/midi")})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["id"])
    assert job["status"] == "done", job
    assert job["params"]["primer_seconds"] == 2.0
    score = symusic.Score.from_midi(client.get(job["files"]["midi"]).content, ttype="second")
    notes = sorted((n.time, n.pitch) for t in score.tracks for n in t.notes)
    # the primer's 8 notes in its first 2 s, then up to 2 s of continuation
    assert [p for _, p in notes[:8]] == [72 + (i * 2) % 24 for i in range(8)]
    assert score.end() <= 4.0 + 1e-6


def test_progress_follows_the_music_composed(client, monkeypatch):
    from classical_music.generate import composer

    studio = client.app.state.studio
    seen = []
    real = composer.sample

    def spy(*args, progress=None, **kw):
        def report(*a):
            progress(*a)
            seen.append(next(j.progress for j in studio.jobs.values() if j.status == "running"))
        return real(*args, progress=report, **kw)

    monkeypatch.setattr(composer, "sample", spy)
    job_id = client.post("/api/generate", json={"seconds": 2, "seed": 1}).json()["id"]
    assert wait(client, job_id)["progress"] == 1.0
    assert seen and seen == sorted(seen) and 0 <= seen[0] and seen[-1] == pytest.approx(SAMPLING_SHARE)


def blocking_app(checkpoint, out, **kw):
    """An app whose jobs wait for `release`, counting how many ever run at once."""
    app = create_app(checkpoint, out, **kw)
    studio = app.state.studio
    release = threading.Event()
    state = {"active": 0, "max_active": 0, "order": []}

    def fake_compose(job):
        state["active"] += 1
        state["max_active"] = max(state["max_active"], state["active"])
        state["order"].append(job.id)
        release.wait(30)
        job.folder.mkdir()
        (job.folder / "piece.mid").write_bytes(b"MThd")
        state["active"] -= 1
        return [{"files": {"midi": "piece.mid"}, "seconds": 1.0, "notes": 1}]

    studio._compose = fake_compose
    return app, release, state


@pytest.fixture
def blocked(checkpoint, tmp_path):
    # keep_seconds=0: prune by count alone, at once
    app, release, state = blocking_app(checkpoint, tmp_path / "out", max_queue=2, keep_jobs=3, keep_seconds=0)
    with TestClient(app, base_url="http://localhost") as c:
        yield c, release, state
        release.set()


def test_recent_and_waiting_jobs_are_never_pruned(checkpoint, tmp_path):
    # 17 accepted jobs (1 running + 16 queued) with 10 kept: all 17 must still answer when done
    app, release, state = blocking_app(checkpoint, tmp_path / "out", max_queue=16, keep_jobs=10)
    with TestClient(app, base_url="http://localhost") as client:
        ids = [client.post("/api/generate", json={"seconds": 1}).json()["id"] for _ in range(17)]
        release.set()
        jobs = [wait(client, j, timeout=30) for j in ids]
        assert [j["status"] for j in jobs] == ["done"] * 17
        assert all(client.get(f"/files/{j}/piece.mid").status_code == 200 for j in ids)
        studio = app.state.studio
        # once they are older than keep_seconds, the oldest beyond keep_jobs go, newest first kept
        for job in studio.jobs.values():
            job.finished -= studio.keep_seconds + 1
        studio._prune()
        assert [client.get(f"/api/jobs/{j}").status_code for j in ids] == [404] * 7 + [200] * 10
        # and past max_age_seconds even the kept ones go
        for job in studio.jobs.values():
            job.finished -= studio.max_age_seconds
        studio._prune()
        assert not studio.jobs and not any(d.is_dir() for d in studio.output_dir.iterdir() if len(d.name) == 32)


def test_jobs_run_one_at_a_time_and_a_full_queue_answers_429(blocked):
    client, release, state = blocked
    first = client.post("/api/generate", json={"seconds": 1}).json()["id"]
    deadline = time.monotonic() + 10
    while client.get(f"/api/jobs/{first}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = [client.post("/api/generate", json={"seconds": 1}).json()["id"] for _ in range(2)]
    assert [client.get(f"/api/jobs/{j}").json()["queue_position"] for j in queued] == [1, 2]
    r = client.post("/api/generate", json={"seconds": 1})
    assert r.status_code == 429 and "busy" in r.json()["detail"]
    release.set()
    jobs = [wait(client, j, timeout=30) for j in [first, *queued]]
    assert [j["status"] for j in jobs] == ["done"] * 3
    assert state["max_active"] == 1 and state["order"] == [first, *queued]
    for a, b in zip(jobs, jobs[1:]):
        assert a["finished"] <= b["started"]


def test_only_the_newest_results_are_kept(blocked):
    client, release, state = blocked
    release.set()
    out = client.app.state.studio.output_dir
    leftover = out / ("f" * 32)  # a result folder from an earlier run of the studio
    leftover.mkdir()
    mine = out / "notes"  # not a job folder: never touched
    mine.mkdir()
    ids = []
    for _ in range(5):
        ids.append(client.post("/api/generate", json={"seconds": 1}).json()["id"])
        wait(client, ids[-1], timeout=30)
    assert sorted(d.name for d in out.iterdir() if not d.name.startswith(".")) == sorted([*ids[-3:], "notes"])
    assert client.get(f"/api/jobs/{ids[0]}").status_code == 404
    assert client.get(f"/files/{ids[0]}/piece.mid").status_code == 404
    assert client.get(f"/files/{ids[-1]}/piece.mid").status_code == 200


def test_a_bad_checkpoint_fails_the_job_with_a_message(tmp_path):
    with TestClient(create_app(tmp_path / "missing", tmp_path / "out"), base_url="http://localhost") as client:
        job = wait(client, client.post("/api/generate", json={"seconds": 1}).json()["id"])
    assert job["status"] == "error" and job["error"] and job["files"] == {}


def test_page_static_files_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Compose" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/generate", "/api/generate_with_primer", "/api/jobs/{job_id}"} <= set(paths)
    assert client.get("/api/config").json()["max_seconds"] == 120


def test_serve_command_defaults_to_localhost():
    from classical_music.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.checkpoint) == ("127.0.0.1", 8000, None)


def test_serve_refuses_a_busy_port(tmp_path, capsys):
    import socket

    from classical_music.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port), "--output_dir", str(tmp_path)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_serve_open_opens_the_browser_once_the_port_answers(monkeypatch):
    import socket
    import webbrowser

    from classical_music import cli
    from classical_music.web import server

    assert cli.build_parser().parse_args(["serve", "--open"]).open
    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t = server._open_browser_when_up("0.0.0.0", port, wait=10)
        time.sleep(0.3)
        assert opened == []  # not listening yet: no page to open
        s.listen()
        t.join(10)
    assert opened == [f"http://127.0.0.1:{port}/"]


def test_the_form_menu_composes_sections_a_return_and_an_ending(client):
    assert client.get("/api/config").json()["forms"] == ["through", "ABA", "AABA", "ABACA"]
    r = client.post("/api/generate", json={"seconds": 12, "seed": 4, "form": "ABA", "num_samples": 2})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["id"])
    assert job["status"] == "done", job
    assert job["params"]["form"] == "ABA"
    for v in job["variations"]:
        assert [s["label"] for s in v["sections"]] == ["A", "B", "A"]
        assert v["sections"][-1]["end"] == pytest.approx(12, abs=0.05)
        midi = symusic.Score.from_midi(client.get(v["files"]["midi"]).content, ttype="second")
        pedal = [c for c in midi.tracks[0].controls if c.number == 64]
        assert pedal and pedal[-1].time - pedal[0].time >= 1.4  # the last chord, held
    through = wait(client, client.post("/api/generate", json={"seconds": 3, "seed": 4}).json()["id"])
    assert through["params"]["form"] == "through" and through["variations"][0]["sections"] == []
    r = client.post("/api/generate", json={"seconds": 5, "form": "ABCD"})
    assert r.status_code == 422 and "form must be one of" in r.json()["detail"]
