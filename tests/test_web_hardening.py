"""The studio under load and odd requests (issue 27, items 2 and 9): a byte cap on the output
folder, MP3s encoded one at a time, a pending MP3 that holds no thread, huge integers, sampling
floors, seconds that are seconds, and strict Host ports."""

import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from classical_music import cli  # noqa: E402
from classical_music.generate.options import MIN_TEMPERATURE, MIN_TOP_P  # noqa: E402
from classical_music.web import create_app, live, server  # noqa: E402
from classical_music.web.guard import host_ok  # noqa: E402

from test_web import checkpoint  # noqa: E402,F401  (a module-scoped fixture: the tiny model)
from test_web_live import played  # noqa: E402


@pytest.fixture
def make_client(checkpoint, tmp_path):  # noqa: F811
    clients = []

    def make(**kw):
        c = TestClient(create_app(checkpoint, tmp_path / f"out{len(clients)}", **kw), base_url="http://localhost")
        clients.append(c.__enter__())
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(checkpoint, tmp_path_factory):  # noqa: F811
    with TestClient(create_app(checkpoint, tmp_path_factory.mktemp("studio")), base_url="http://localhost") as c:
        yield c


def wait_done(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job.get("status") in ("done", "error"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not done")


def folder_bytes(out):
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------
# 2: the output folder's byte cap, and the MP3 encoder pool


def test_the_output_folder_holds_at_most_max_output_mb(make_client):
    client = make_client(max_output_mb=1, keep_jobs=10)  # every job "recent": keep_seconds is 5 min
    studio = client.app.state.studio

    def fake_compose(job):  # 400 kB of results per job, as a rendered piece would leave
        job.folder.mkdir()
        (job.folder / "piece.wav").write_bytes(bytes(400_000))
        return [{"files": {"wav": "piece.wav"}, "seconds": 1.0, "notes": 1}]

    studio._compose = fake_compose
    ids = []
    for _ in range(5):
        r = client.post("/api/generate", json={"seconds": 1})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
        assert wait_done(client, ids[-1])["status"] == "done"
        assert folder_bytes(studio.output_dir) <= 2**20  # the cap holds after every job
    # the oldest went first, though they finished seconds ago; the newest are all there
    assert [client.get(f"/files/{j}/piece.wav").status_code for j in ids] == [404] * 3 + [200] * 2
    # a job that could not fit even with every finished result deleted: 429, saying why
    r = client.post("/api/generate", json={"seconds": 10, "num_samples": 1})
    assert r.status_code == 429
    assert "output folder is full" in r.json()["detail"] and "--max_output_mb" in r.json()["detail"]
    assert studio.max_output_bytes == 2**20
    # play along is held to the same cap before anything is rendered
    long_duet = {"you": [[60, 0.0, 1.0, 80]], "model": [[64, 99.0, 100.0, 80]]}
    r = client.post("/api/duet", json=long_duet)
    assert r.status_code == 429 and "output folder is full" in r.json()["detail"]
    assert len([d for d in studio.output_dir.iterdir() if len(d.name) == 32]) == 2


def test_serve_has_a_max_output_mb_flag_with_a_default():
    args = cli.build_parser().parse_args(["serve"])
    assert args.max_output_mb == server.MAX_OUTPUT_MB >= 1024
    assert cli.build_parser().parse_args(["serve", "--max_output_mb", "300"]).max_output_mb == 300


def test_mp3s_are_encoded_one_at_a_time(client, monkeypatch):
    state = {"now": 0, "most": 0, "done": 0}
    lock, release = threading.Lock(), threading.Event()
    real = live._encode_mp3

    def counted(wav, done):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        release.wait(30)  # an encoder at work (each used to get its own thread: 4 at once, 3.1 GB)
        with lock:
            state["now"] -= 1
            state["done"] += 1
        real(wav, done)

    monkeypatch.setattr(live, "_encode_mp3", counted)
    for i in range(4):
        r = client.post("/api/duet", json={"you": played(6), "model": played(6, t0=102.0)})
        assert r.status_code == 200, r.text
    time.sleep(0.3)
    assert state["most"] == 1  # the others wait their turn
    release.set()
    deadline = time.monotonic() + 30
    while state["done"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["done"] == 4 and state["most"] == 1


# ------------------------------------------------------------------------------------------
# 9: the play-along routes


def test_a_pending_mp3_holds_no_server_thread(client, monkeypatch):
    release = threading.Event()
    real = live._encode_mp3

    def slow(wav, done):
        release.wait(30)
        real(wav, done)

    monkeypatch.setattr(live, "_encode_mp3", slow)
    r = client.post("/api/duet", json={"you": played(6), "model": []})
    assert r.status_code == 200, r.text
    mp3 = r.json()["files"]["mp3"]
    answers = []
    getters = [threading.Thread(target=lambda: answers.append(client.get(mp3))) for _ in range(45)]
    for t in getters:
        t.start()
    time.sleep(0.5)  # all 45 are waiting for the encoder now
    t0 = time.monotonic()
    assert client.get("/api/jobs/none").status_code == 404  # any route served by a worker thread
    assert time.monotonic() - t0 < 2  # /api/config took 3.7 s (and up to 60) when each wait held a thread
    release.set()
    for t in getters:
        t.join(30)
    assert len(answers) == 45 and all(a.status_code == 200 and a.headers["content-type"] == "audio/mpeg"
                                      for a in answers)
    # past the wait, a still-encoding MP3 answers 202 with Retry-After instead of holding on
    monkeypatch.setattr(server, "PENDING_WAIT", 0.1)
    release.clear()
    mp3 = client.post("/api/duet", json={"you": played(5), "model": []}).json()["files"]["mp3"]
    r = client.get(mp3)
    assert r.status_code == 202 and r.headers["retry-after"] and "still being encoded" in r.json()["detail"]
    release.set()


@pytest.mark.parametrize("route", ["/api/continue", "/api/duet"])
@pytest.mark.parametrize("where", [0, 1, 3])
def test_integers_past_2_to_the_64_are_422(client, route, where):
    note = [60, 1, 2, 80]
    note[where] = 2**64 + 5
    body = {"notes": [note]} if route == "/api/continue" else {"you": [note], "model": []}
    r = client.post(route, json=body)
    assert r.status_code == 422, r.text
    assert ("pitch", "start", "", "velocity")[where] in r.json()["detail"]


def test_sampling_floors_are_the_same_for_the_cli_and_the_studio(client, checkpoint, tmp_path, capsys):  # noqa: F811
    for field, low in (("temperature", MIN_TEMPERATURE), ("top_p", MIN_TOP_P)):
        for route, body in (("/api/generate", {}), ("/api/continue", {"notes": played(4)})):
            r = client.post(route, json={**body, field: 1e-300})
            assert r.status_code == 422 and field in r.json()["detail"], r.text
            r = client.post(route, json={**body, field: low, "seconds": 1})  # the floor itself is taken
            assert r.status_code != 422 or field not in r.json()["detail"], r.text
        out = tmp_path / "o.mid"
        assert cli.main(["generate", "--checkpoint", str(checkpoint), f"--{field}", "1e-300", "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--{field}" in err, err and f"{low:g}" in err and not out.exists()


def test_play_along_results_report_seconds_not_ticks(client):
    r = client.post("/api/duet", json={"you": [[60, 10.0, 11.0, 80]], "model": [[64, 12.0, 13.0, 80]]})
    job_id = r.json()["files"]["midi"].split("/")[2]
    assert client.get(f"/api/jobs/{job_id}").json()["variations"][0]["seconds"] == pytest.approx(3.0)
    ans = client.post("/api/continue", json={"notes": played(), "seconds": 2, "seed": 1}).json()
    job = client.get(f"/api/jobs/{ans['files']['midi'].split('/')[2]}").json()
    assert job["variations"][0]["seconds"] == pytest.approx(ans["seconds"], abs=0.01) and ans["seconds"] <= 2.1


@pytest.mark.parametrize("host,ok", [("localhost:evil", False), ("localhost:", False), ("localhost:99999", False),
                                     ("[::1]:x", False), ("[::1]evil", False), ("127.0.0.1:8000:1", False),
                                     ("localhost:8000", True), ("[::1]:8000", True), ("localhost", True)])
def test_host_ports_are_parsed_strictly(client, host, ok):
    assert host_ok(host, {"localhost", "127.0.0.1", "::1"}) is ok
    assert (client.get("/api/config", headers={"host": host}).status_code == 200) is ok
