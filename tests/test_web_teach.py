"""The studio's fine-tune from the page (web/teach.py): upload MIDI, a job with progress, one at a
time, cancellable; the model joins the Model menu."""

import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from classical_music.web import create_app  # noqa: E402
from conftest import scale, write_midi  # noqa: E402
from test_finetune import tiny_model  # noqa: E402

QUICK = {"max_steps": 25, "lr": 0.01, "batch_size": 8, "seq_len": 64, "threads": 1}


def midi_files(tmp_path, n=6):
    out = []
    for i in range(n):
        path = tmp_path / f"piece {i}.mid"
        write_midi(path, scale(160, base=48 + i % 4, step=0.2 + 0.01 * i))
        out.append(("files", (path.name, path.read_bytes(), "audio/midi")))
    return out


def wait(c, lesson_id, until=("done", "error", "cancelled"), timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(f"/api/finetune/{lesson_id}").json()
        if r["status"] in until or r["stage"] in until:
            return r
        time.sleep(0.1)
    raise AssertionError(f"fine-tune still {r}")


@pytest.fixture
def studio(tmp_path):
    def make(**kw):
        app = create_app(tiny_model(tmp_path / "start"), tmp_path / "out", models_dir=tmp_path / "models",
                         finetune_options={**QUICK, "reference": str(tmp_path / "no-corpus"), **kw})
        return TestClient(app, base_url="http://localhost")
    return make


def test_a_folder_uploaded_from_the_page_becomes_a_model_in_the_menu(studio, tmp_path):
    with studio() as c:
        limits = c.get("/api/config").json()["finetune"]
        assert limits["available"] and limits["max_minutes"] == 10 and limits["max_files"] == 200
        r = c.post("/api/finetune", data={"name": "mine", "minutes": "2"}, files=midi_files(tmp_path, 8))
        assert r.status_code == 202, r.text
        done = wait(c, r.json()["id"])
        assert done["status"] == "done", done
        held = done["result"]["held_out"]
        assert held["pieces"] == 2 and held["yours"] < held["shipped"] - 0.05  # it learned the upload
        assert "held-out nats/event" in done["result"]["summary"] and done["progress"] == 1
        assert any("files" in line and "held out" in line for line in done["log"])
        assert not any(".teach-" in line for line in done["log"])  # no server paths of the upload
        # an ordinary checkpoint in --models_dir, listed and chosen like one from `finetune --out`
        assert (tmp_path / "models" / "mine" / "model.safetensors").is_file()
        card = (tmp_path / "models" / "mine" / "MODEL_CARD.md").read_text()
        assert "Made in the studio" in card and "8 uploaded MIDI files" in card and ".teach-" not in card
        assert "mine" in [m["name"] for m in c.get("/api/models").json()["models"]]
        assert c.post("/api/model", json={"name": "mine"}).status_code == 200
        assert c.post("/api/generate", json={"seconds": 1, "seed": 1}).status_code == 202
        # nothing of the upload is left behind
        assert not list((tmp_path / "out").glob(".teach-*"))
        # a name already taken is refused, never overwritten
        r = c.post("/api/finetune", data={"name": "mine", "minutes": "1"}, files=midi_files(tmp_path))
        assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_one_at_a_time_and_cancel_saves_nothing(studio, tmp_path):
    with studio(max_steps=0) as c:  # the time budget alone: it runs until cancelled
        first = c.post("/api/finetune", data={"name": "long", "minutes": "10"}, files=midi_files(tmp_path))
        assert first.status_code == 202
        lesson = first.json()["id"]
        r = c.post("/api/finetune", data={"name": "other", "minutes": "1"}, files=midi_files(tmp_path))
        assert r.status_code == 429 and "already running" in r.json()["detail"]
        training = wait(c, lesson, until=("training",))
        assert 0 <= training["progress"] < 1
        # another site cannot cancel it
        assert c.post(f"/api/finetune/{lesson}/cancel", headers={"Origin": "http://evil.example"}).status_code == 403
        assert c.post(f"/api/finetune/{lesson}/cancel").status_code == 200
        end = wait(c, lesson)
        assert end["status"] == "cancelled"
        assert not (tmp_path / "models" / "long").exists()
        assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
        assert not list((tmp_path / "out").glob(".teach-*"))
        assert c.get("/api/finetune/nope").status_code == 404


@pytest.mark.parametrize("form, files, status, words", [
    ({"name": "../up", "minutes": "1"}, None, 422, "name must be"),
    ({"name": "ok", "minutes": "0"}, None, 422, "minutes must be"),
    ({"name": "ok", "minutes": "11"}, None, 422, "at most 10"),
    ({"name": "ok", "minutes": "1"}, [("files", ("notes.txt", b"hello", "text/plain"))], 422, "not a MIDI file"),
    ({"name": "ok", "minutes": "1"}, [("files", ("big.mid", b"MThd" + b"\0" * 5000, "audio/midi"))], 413, "larger than"),
])
def test_bad_uploads_are_one_line_and_start_nothing(tmp_path, form, files, status, words):
    app = create_app(tiny_model(tmp_path / "start"), tmp_path / "out", models_dir=tmp_path / "models",
                     max_upload_bytes=4096, finetune_options=QUICK)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/api/finetune", data=form, files=files or midi_files(tmp_path, 2))
        assert r.status_code == status, r.text
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
        assert not (tmp_path / "models" / form["name"]).exists()
        assert not list((tmp_path / "out").glob(".teach-*"))


def test_a_folder_finetune_cannot_use_fails_as_the_job_says(studio, tmp_path):
    with studio() as c:
        one = midi_files(tmp_path, 1)
        r = c.post("/api/finetune", data={"name": "one", "minutes": "1"}, files=one)
        assert r.status_code == 202
        end = wait(c, r.json()["id"])
        assert end["status"] == "error" and "\n" not in end["error"]
        assert str(tmp_path) not in end["error"]  # no server paths
        assert not (tmp_path / "models" / "one").exists()


def test_the_page_offers_it_in_both_languages():
    from pathlib import Path

    static = Path(__file__).resolve().parents[1] / "src" / "classical_music" / "web" / "static"
    html, strings = (static / "index.html").read_text(), (static / "i18n.js").read_text()
    assert 'id="teach"' in html and 'id="teach-files"' in html and 'id="teach-cancel"' in html
    ko = strings[strings.index("  ko: {"):]
    for key in ("teach_title", "teach_start", "teach_cancel", "teach_done", "teach_cancelled", "teach_training"):
        assert f"{key}:" in strings[:strings.index("  ko: {")] and f"{key}:" in ko, key


def test_names_the_menu_would_hide_and_composers_it_cannot_learn_are_refused_at_once(studio, tmp_path):
    with studio() as c:
        r = c.post("/api/finetune", data={"name": "start", "minutes": "1"}, files=midi_files(tmp_path, 2))
        assert r.status_code == 409 and "started with" in r.json()["detail"]  # "start" is the startup model
        r = c.post("/api/finetune", data={"name": "x", "minutes": "1", "composer": "any"}, files=midi_files(tmp_path, 2))
        assert r.status_code == 422 and "composer's name" in r.json()["detail"]
        assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_stopping_the_studio_cancels_a_fine_tune_and_a_killed_ones_folder_is_swept(studio, tmp_path):
    with studio(max_steps=0) as c:
        lesson = c.post("/api/finetune", data={"name": "long", "minutes": "10"}, files=midi_files(tmp_path)).json()["id"]
        wait(c, lesson, until=("training",))
        assert c.get("/api/config").json()["finetune"]["running"] == lesson  # a reloaded page follows it
    # the TestClient's exit is the server's shutdown: cancelled, nothing saved, no working folder left
    models = tmp_path / "models"
    assert not (models / "long").exists() and not [p for p in models.iterdir() if p.name.startswith(".")]
    # a working folder left by a process killed mid-run (no live lock) goes at the next start
    stale = models / ".old.finetune"
    (stale / "cache-x").mkdir(parents=True)
    (stale / ".lock").write_text('{"pid": 999999999, "command": "classical-music finetune"}')
    with studio():
        pass
    assert not stale.exists()


def test_any_seed_draws_a_density():
    from classical_music.conditions import draw_density

    deciles = [2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 20.0]
    for seed in (0, 1, 2**31 - 1, 2**62 + 3, 10**400):  # the CLI takes any integer
        assert 2.0 <= draw_density(seed, deciles) <= 20.0
    assert len({draw_density(s, deciles) for s in range(2**62, 2**62 + 6)}) == 6  # still spread
