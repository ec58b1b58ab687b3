"""The studio's model menu: GET /api/models lists --models_dir's checkpoints, POST /api/model picks one."""

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from classical_music import conditions  # noqa: E402
from classical_music.model import ComposerLSTM, ModelConfig  # noqa: E402
from classical_music.tokenizer import get_tokenizer  # noqa: E402
from classical_music.web import create_app  # noqa: E402


def tiny(path, vocab, extra=None):
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=1,
                             conditions=vocab)).save_pretrained(path, tok, extra=extra)
    return path


def test_models_menu_lists_and_switches(tmp_path):
    start = tiny(tmp_path / "start", {})
    models = tmp_path / "models"
    vocab = conditions.vocabularies({"chopin": 2.0}, 1.0, names=("composer",))
    vocab["composer"].append("bingen")
    tiny(models / "mine", vocab, extra={"finetune": {"folder_name": "my-midi", "held_out": {
        "shipped": 2.31, "yours": 2.12, "pieces": 9}}})
    (models / ".mine.finetune").mkdir()  # a running fine-tune's working folder: not a model
    (models / "notes").mkdir()  # nor a folder without weights
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text('{"model_type": "classical-music-lstm", "vocab_size": 3}')
    (models / "broken" / "model.safetensors").write_bytes(b"not weights")
    app = create_app(start, tmp_path / "out", models_dir=models)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.get("/api/models").json()
        assert r["current"] == "start"
        assert [m["name"] for m in r["models"]] == ["start", "broken", "mine"]
        mine = r["models"][2]["finetune"]
        assert mine == {"folder": "my-midi", "pieces": 9, "held_out_shipped": 2.31, "held_out_yours": 2.12}
        assert c.get("/api/config").json()["conditions"] == {}
        r = c.post("/api/model", json={"name": "mine"})
        assert r.status_code == 200 and r.json()["current"] == "mine"
        assert "bingen" in r.json()["conditions"]["composer"]
        assert "bingen" in c.get("/api/config").json()["conditions"]["composer"]
        job = c.post("/api/generate", json={"seconds": 1, "seed": 1, "composer": "bingen"})
        assert job.status_code == 202, job.text
        # a damaged checkpoint or an unknown name: 422, and the model in use stays
        r = c.post("/api/model", json={"name": "broken"})
        assert r.status_code == 422 and c.get("/api/models").json()["current"] == "mine"
        r = c.post("/api/model", json={"name": "../start"})
        assert r.status_code == 422 and "no model named" in r.json()["detail"]
        # another site cannot switch it
        r = c.post("/api/model", json={"name": "start"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and c.get("/api/models").json()["current"] == "mine"


def test_page_strings_for_the_menu_are_in_both_languages():
    from pathlib import Path

    import classical_music.web as web

    i18n = (Path(web.__file__).parent / "static" / "i18n.js").read_text(encoding="utf-8")
    en, ko = i18n.split("  ko: {")
    for key in ("model:", "model_hint:", "shipped_model:", "finetuned_on:", "model_failed:"):
        assert key in en and key in ko
