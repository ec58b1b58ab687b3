"""Play along: POST /api/continue answers what was played at once; /api/duet renders both parts."""

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
from classical_music.web.live import MAX_NOTES  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=16, hidden_size=32, num_layers=2))
    with torch.no_grad():  # an untrained model would otherwise stop at once, or only wait
        model.head.bias[tok.eos_id] = -20
        model.head.bias[tok.note_on + 48:tok.note_on + 84] = 3.0
    path = tmp_path_factory.mktemp("ck") / "best"
    model.save_pretrained(path, tokenizer=tok)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    app = create_app(path, tmp_path_factory.mktemp("studio"), max_upload_bytes=64 * 1024)
    with TestClient(app, base_url="http://localhost") as c:
        yield c
    torch.set_num_threads(threads)


def played(n=12, t0=100.0):  # on the page's clock: it does not start at 0
    return [[60 + (i * 5) % 12, t0 + i * 0.25, t0 + i * 0.25 + 0.2, 40 + i * 5] for i in range(n)]


def test_continue_answers_after_what_was_played(client):
    notes = played()
    r = client.post("/api/continue", json={"notes": notes, "seconds": 3, "seed": 2})
    assert r.status_code == 200, r.text
    ans = r.json()
    end = max(n[2] for n in notes)
    assert ans["notes"] and ans["seed"] == 2
    bad = [n for n in ans["notes"] if not (end - 0.011 <= n[1] < n[2] <= end + 3 + 0.03 and 0 <= n[0] < 128
                                           and 1 <= n[3] < 128)]
    assert not bad, (end, bad)
    assert ans["start"] == min(n[1] for n in ans["notes"])
    for kind, magic in (("midi", b"MThd"), ("wav", b"RIFF"), ("mp3", b"")):
        got = client.get(ans["files"][kind])
        assert got.status_code == 200 and got.content.startswith(magic) and len(got.content) > 100, kind
    # the files hold the answer alone, from its first note
    midi = symusic.Score.from_midi(client.get(ans["files"]["midi"]).content, ttype="second")
    got = sorted((round(n.time, 2), n.pitch) for t in midi.tracks for n in t.notes)
    want = sorted((round(s - ans["start"], 2), p) for p, s, e, v in ans["notes"])
    assert got == want
    again = client.post("/api/continue", json={"notes": notes, "seconds": 3, "seed": 2}).json()
    assert again["notes"] == ans["notes"]  # a seed makes the answer again


@pytest.mark.parametrize("body, words", [
    ({"notes": []}, "at least one note"),
    ({"notes": played(), "seconds": 31}, "seconds"),
    ({"notes": played(), "seconds": 0}, "seconds"),
    ({"notes": played(), "seconds": "8"}, "seconds"),
    ({"notes": played(), "temperature": 0}, "temperature"),
    ({"notes": played(), "top_p": 2}, "top_p"),
    ({"notes": played(), "seed": -1}, "seed"),
    ({"notes": played(), "tempo": 3}, "tempo"),
    ({"notes": [[60, 0, 1]]}, "notes"),
    ({"notes": [[60, 0, 1, 80, 1]]}, "notes"),
    ({"notes": [["60", 0, 1, 80]]}, "notes"),
    ({"notes": [[True, 0, 1, 80]]}, "notes"),
    ({"notes": [[60.5, 0, 1, 80]]}, "pitch"),
    ({"notes": [[128, 0, 1, 80]]}, "pitch"),
    ({"notes": [[60, 0, 1, 0]]}, "velocity"),
    ({"notes": [[60, 0, 1, 200]]}, "velocity"),
    ({"notes": [[60, 1, 1, 80]]}, "start < end"),
    ({"notes": [[60, -1, 1, 80]]}, "start < end"),
    ({"notes": [[60, 0, 1e12, 80]]}, "end"),
    ({"notes": [[60, 0, 1, 80], [62, 70, 71, 80]]}, "span"),
    ({"notes": [[60, i * 0.01, i * 0.01 + 0.5, 80] for i in range(MAX_NOTES + 1)]}, "notes"),
    ({"notes": played(), "composer": "chopin"}, "no composer condition"),  # an unconditioned model
    ({"notes": played(), "density": "4"}, "density"),
    ({"notes": played(), "guidance": 11}, "guidance"),
])
def test_continue_limits_are_422_with_a_message(client, body, words):
    before = len(client.app.state.studio.jobs)
    r = client.post("/api/continue", json=body)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str) and words in r.json()["detail"] and len(r.json()["detail"]) < 400
    assert len(client.app.state.studio.jobs) == before


def test_continue_refuses_non_finite_and_cross_origin(client):
    r = client.post("/api/continue", content=b'{"notes": [[60, 0, NaN, 80]]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/continue", json={"notes": played()}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_duet_has_both_parts_on_their_own_tracks(client):
    you = played(8)
    ans = client.post("/api/continue", json={"notes": you, "seconds": 2, "seed": 1}).json()
    r = client.post("/api/duet", json={"you": you, "model": ans["notes"]})
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    midi = symusic.Score.from_midi(client.get(files["midi"]).content, ttype="second")
    assert [t.name for t in midi.tracks] == ["You", "Model"]
    assert [len(t.notes) for t in midi.tracks] == [8, len(ans["notes"])]
    assert midi.tracks[0].notes[0].time == pytest.approx(0, abs=0.01)  # starts at the first note
    assert client.get(files["wav"]).content[:4] == b"RIFF" and client.get(files["mp3"]).status_code == 200
    assert client.post("/api/duet", json={"you": [], "model": []}).status_code == 422
    assert client.post("/api/duet", json={"you": you}).status_code == 422


def test_a_checkpoint_without_time_events_refuses_play_along_and_still_composes(tmp_path):
    # REMI has bars and positions, not key-ups and time shifts: an answer cannot say where the
    # played notes end, so /api/continue says so in one line; the studio's jobs compose as `generate` does
    from conftest import tiny_checkpoint

    path = tiny_checkpoint(tmp_path / "remi", tokenizer="remi")
    with TestClient(create_app(path, tmp_path / "studio"), base_url="http://localhost") as c:
        r = c.post("/api/continue", json={"notes": played(), "seconds": 2, "seed": 1})
        assert r.status_code == 422 and "play along" in r.json()["detail"] and "remi" in r.json()["detail"]
        job_id = c.post("/api/generate", json={"seconds": 2, "seed": 1, "form": "ABA"}).json()["id"]
        for _ in range(600):
            job = c.get(f"/api/jobs/{job_id}").json()
            if job["status"] in ("done", "error"):
                break
            time.sleep(0.1)
        assert job["status"] == "done", job
        assert job["variations"][0]["sections"] == []  # nothing planned to draw
        score = symusic.Score.from_midi(c.get(job["files"]["midi"]).content, ttype="second")
        assert score.end() <= 2.0 + 1e-6
