"""`classical-music finetune`: a folder of MIDI in, an ordinary checkpoint out, judged on held-out pieces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classical_music import conditions
from classical_music.cli import main
from classical_music.model import ComposerLSTM, ModelConfig
from classical_music.tokenizer import get_tokenizer
from classical_music.train.finetune import FinetuneConfig, finetune

from conftest import scale, write_midi

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(path: Path, conditioned: bool = True) -> Path:
    tok = get_tokenizer("performance")
    vocab = conditions.vocabularies({"chopin": 2.0}, 1.0) if conditioned else {}
    ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=16, hidden_size=24, num_layers=2,
                             conditions=vocab)).save_pretrained(path, tok)
    return path


def folder_of(path: Path, n: int = 8) -> Path:
    for i in range(n):
        write_midi(path / f"piece{i}.mid", scale(160, base=48 + i % 4, step=0.2 + 0.01 * i))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def cfg(folder, out, tiny, tmp_path, **kw):
    kw = {"minutes": 5, "max_steps": 30, "lr": 0.01, "batch_size": 8, "seq_len": 64, "threads": 1, "no_progress": True,
          "reference": str(tmp_path / "no-corpus"), **kw}
    return FinetuneConfig(folder=str(folder), out=str(out), init_from=str(tiny), **kw)


def test_tiny_folder_finetunes_and_held_out_falls(tmp_path, tiny, capsys):
    folder = folder_of(tmp_path / "midi")
    out = tmp_path / "models" / "mine"  # models/ does not exist yet: made as generate makes its folder
    r = finetune(cfg(folder, out, tiny, tmp_path, composer="Hildegard von Bingen"))
    assert r["held_out"]["pieces"] == 2 and r["data"]["train_pieces"] == 6  # a fifth of 8 pieces, by piece
    assert r["held_out"]["yours"] < r["held_out"]["shipped"] - 0.05
    assert r["steps"] > 0 and r["stop_reason"]
    line = capsys.readouterr().out
    assert "held-out nats/event: base " in line and "on 2 pieces; valid of the shipped corpus not measured" in line
    # an ordinary checkpoint, with its card and curve beside it; no prepared cache left behind
    model = ComposerLSTM.from_pretrained(out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "learning_curve.png"} <= {
        p.name for p in out.iterdir()}
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out nats/event" in (out / "MODEL_CARD.md").read_text()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".finetune-")]
    # how densely your pieces open (the 6 learned from: one note every 0.2-0.27 s), which planned
    # pieces from it draw their density from
    block = json.loads((out / "config.json").read_text())[conditions.OPENING_KEY]
    assert block["pieces"] == 6 and 1 / 0.28 < block["deciles"][0] <= block["deciles"][-1] < 1 / 0.19
    from classical_music.generate import GenerateConfig

    drawn = {GenerateConfig(output=tmp_path / "x.mid", seconds=60).piece_plans(s, model)[0].sections[0].density
             for s in range(12)}
    assert len(drawn) > 3 and all(block["deciles"][0] <= d <= block["deciles"][-1] for d in drawn)
    # the new composer name is a new vocabulary entry, known to --list_conditions and generate
    assert model.config.conditions["composer"][-1] == "bingen"
    from classical_music.generate import condition_codes, list_conditions

    assert "bingen" in list_conditions(model)
    codes, labels = condition_codes(model, {"composer": "bingen"})
    assert labels["composer"] == "bingen"
    # the held-out score the run reports is what `evaluate` would find (int8 or float32: within 2e-3)
    from classical_music.evaluate import evaluate

    held = [folder / k for k in r["data"]["held_out"]]
    assert abs(evaluate(model, held, progress=False)["nats_per_event"] - r["held_out"]["yours"]) < 2e-3


def test_bad_folders_one_line_exit_2(tmp_path, tiny, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    one = folder_of(tmp_path / "one", n=1)
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"x{i}.mid").write_bytes(os.urandom(200))
    plain = tiny_model(tmp_path / "plain", conditioned=False)
    two = folder_of(tmp_path / "two", n=3)
    cases = [
        ([str(empty)], "no MIDI files"),
        ([str(one)], "at least 2 pieces"),
        ([str(junk)], "no usable MIDI file"),
        ([str(tmp_path / "missing")], "no such folder"),
        ([str(two), "--composer", "chopin", "--init_from", str(plain)], "no composer condition"),
    ]
    for argv, message in cases:
        out = tmp_path / "models" / "x"
        args = ["finetune", *argv, "--out", str(out), "--minutes", "0.02", "--no_progress",
                "--reference", str(tmp_path / "none")]
        if "--init_from" not in argv:
            args += ["--init_from", str(tiny)]
        (tmp_path / "models").mkdir(exist_ok=True)
        assert main(args) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
        assert not out.exists() and not list((tmp_path / "models").iterdir())  # nothing half-written
    # python train.py --finetune takes the same path
    from classical_music.train import main as train_main

    assert train_main(["--finetune", str(empty), "--out", str(tmp_path / "models" / "y")]) == 2
    assert "no MIDI files" in capsys.readouterr().err


def test_out_refuses_a_different_model_unless_overwrite(tmp_path, tiny, capsys):
    a, b = folder_of(tmp_path / "a"), folder_of(tmp_path / "b", n=5)
    out = tmp_path / "mine"
    args = ["finetune", str(a), "--out", str(out), "--init_from", str(tiny), "--minutes", "0.02", "--no_progress",
            "--reference", str(tmp_path / "none"), "--batch_size", "4", "--seq_len", "32"]
    assert main(args) == 0
    first = (out / "model.safetensors").read_bytes()
    assert main(args) == 0  # the same folder again: replacing its own model is fine
    other = [str(b) if x == str(a) else x for x in args]
    capsys.readouterr()
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "already holds a model fine-tuned on" in err and "--overwrite" in err
    assert main(other + ["--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["finetune"]["folder"] == str(b.resolve())
    assert first  # a checkpoint that is not a fine-tune is "something else"
    tiny_model(tmp_path / "trained")
    capsys.readouterr()
    assert main([*other[:3], str(tmp_path / "trained"), *other[4:]]) == 2
    assert "already holds something else" in capsys.readouterr().err


def test_sigterm_keeps_the_best_so_far_and_out_is_locked(tmp_path, tiny, capsys):
    folder = folder_of(tmp_path / "midi")
    out = tmp_path / "mine"
    cmd = [sys.executable, "-m", "classical_music.cli", "finetune", str(folder), "--out", str(out),
           "--init_from", str(tiny), "--minutes", "5", "--lr", "0.01", "--no_progress", "--threads", "1",
           "--reference", str(tmp_path / "none"), "--batch_size", "8", "--seq_len", "64"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:
        if line.startswith("recipe "):
            break
    # a second run into the same --out meanwhile: one line, exit 2, naming the first
    assert main(cmd[3:]) == 2
    assert "in use by pid" in capsys.readouterr().err
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in (out / "MODEL_CARD.md").read_text() and "held-out nats/event" in rest
    ComposerLSTM.from_pretrained(out)


def test_no_gain_keeps_the_starting_weights(tmp_path, tiny):
    folder = folder_of(tmp_path / "midi")
    out = tmp_path / "mine"
    r = finetune(cfg(folder, out, tiny, tmp_path, lr=1e4, max_steps=4))  # a rate that only wrecks it
    assert r["best_step"] == 0 and r["held_out"]["yours"] == r["held_out"]["shipped"]
    before, after = ComposerLSTM.from_pretrained(tiny).state_dict(), ComposerLSTM.from_pretrained(out).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_folder_of_music_the_model_learned_from_is_named_and_the_new_model_remembers(tmp_path, capsys):
    import shutil

    from classical_music.checkpoint import TRAINED_ON_NAME
    from classical_music.train.finetune_data import digest

    folder = folder_of(tmp_path / "midi")
    base = tmp_path / "base"
    shutil.copytree(tiny_model(tmp_path / "plain"), base)
    learned = sorted(folder.glob("*.mid"))[:3]
    (base / TRAINED_ON_NAME).write_text("".join(f"{digest(p)}\n" for p in learned) + "not a digest\n")
    out = tmp_path / "mine"
    r = finetune(cfg(folder, out, base, tmp_path, max_steps=3))
    assert r["data"]["already_learned"] == 3
    assert "note: 3 of the folder's 8 files are music the base model learned from" in capsys.readouterr().out
    assert "3 files the base model had already learned from" in (out / "MODEL_CARD.md").read_text()
    # the new model knows what it learned: the base's files and the ones it learned from here
    mine = set((out / TRAINED_ON_NAME).read_text().split())
    held = {digest(folder / k) for k in r["data"]["held_out"]}
    assert {digest(p) for p in learned} <= mine and not held & (mine - {digest(p) for p in learned})
    assert len(mine - {digest(p) for p in learned}) == len({digest(p) for p in folder.glob("*.mid")} - held
                                                            - {digest(p) for p in learned})
    # a base without the list says nothing
    finetune(cfg(folder, tmp_path / "other", tmp_path / "plain", tmp_path, max_steps=3))
    assert "learned from:" not in capsys.readouterr().out


def test_a_change_that_forgets_too_much_is_kept_only_in_part(tmp_path, tiny, capsys):
    from classical_music.train import adapt, finetune_data as fd
    from classical_music.train.finetune_check import nats_per_event

    # a "shipped corpus" of other music (slow low chords, soft) beside a folder of fast scales,
    # learned at a rate that specialises the model in seconds
    corpus = tmp_path / "corpus"
    rows = ["path,composer,split"]
    for i in range(4):
        chords = [(36 + i + k * 7, j * 0.9, 0.8, 30 + 5 * k) for j in range(40) for k in range(3)]
        write_midi(corpus / f"other{i}.mid", chords)
        rows.append(f"other{i}.mid,,valid")
    (corpus / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    folder = folder_of(tmp_path / "midi")
    whole = finetune(cfg(folder, tmp_path / "whole", tiny, tmp_path, reference=str(corpus),
                         max_steps=60, lr=0.03, rehearse=0))
    assert 0 < whole["kept_share"] < 1, whole["reference"]
    ref = whole["reference"]
    assert ref["yours"] - ref["shipped"] <= adapt.FORGET_BOUND + 1e-6
    assert "kept" in capsys.readouterr().out
    # what it reports is what the saved model scores; some of the folder's gain stays
    model = ComposerLSTM.from_pretrained(tmp_path / "whole").eval()
    items, _ = fd.reference_items(fd.folder_files(folder), model.tokenizer, corpus)
    assert abs(nats_per_event(model, items) - ref["yours"]) < 1e-4
    assert whole["held_out"]["yours"] < whole["held_out"]["shipped"]
    assert "of the change kept" in (tmp_path / "whole" / "MODEL_CARD.md").read_text()
    # rehearsing the starting model's own music while learning keeps more of the change
    rehearsed = finetune(cfg(folder, tmp_path / "rehearsed", tiny, tmp_path, reference=str(corpus),
                             max_steps=60, lr=0.03, rehearse=3))
    assert rehearsed["kept_share"] > whole["kept_share"], (rehearsed["kept_share"], whole["kept_share"])
    assert rehearsed["reference"]["yours"] - ref["shipped"] <= adapt.FORGET_BOUND + 1e-6


def test_without_the_corpus_the_base_models_own_music_checks_forgetting(tmp_path, tiny, capsys):
    from classical_music.train import adapt

    folder = folder_of(tmp_path / "midi")
    r = finetune(cfg(folder, tmp_path / "mine", tiny, tmp_path, max_steps=60, lr=0.03, rehearse=0))
    own = r["own_music"]
    assert r["reference"]["shipped"] is None and own["shipped"] > 0
    assert own["yours"] - own["shipped"] <= adapt.FORGET_BOUND + 1e-6 and 0 < r["kept_share"] < 1
    out = capsys.readouterr().out
    assert "the base model's own music" in out.splitlines()[-2] and "raised the base model's own music by" in out
    # the same seed composes the same check: a second run measures the base model alike
    again = finetune(cfg(folder, tmp_path / "mine", tiny, tmp_path, max_steps=2, lr=0.03))
    assert again["own_music"]["shipped"] == own["shipped"]


def test_the_summary_line_shows_a_small_change_without_a_bare_zero():
    from classical_music.train.finetune_card import summary_line

    def line(shipped, yours):
        return summary_line({"base_name": "shipped", "held_out": {"shipped": shipped, "yours": yours, "pieces": 9},
                             "reference": {"shipped": 2.03, "yours": 2.05}})

    assert "shipped 2.31 → yours 2.12 (−0.19) on 9 pieces; valid of the shipped corpus 2.03 → 2.05" == line(2.31, 2.12)[21:]
    assert "(−0.003)" in line(1.3696, 1.3663) and "(+0.001)" in line(1.3696, 1.3703)
    assert "(+0.00)" in line(1.37, 1.37)


def test_rehearsal_is_the_starting_models_own_predictions(tiny):
    from classical_music.train import adapt, rehearse

    model = ComposerLSTM.from_pretrained(tiny).eval()
    r = rehearse.Rehearsal(model, seq_len=64, pieces=3)
    assert len(r) > 0 and r.x.shape[1] == 64 and r.target.shape[-1] == model.config.vocab_size
    ad = adapt.adapt(model, "full")
    gen = torch.Generator().manual_seed(0)
    assert float(r.loss(ad, 4, gen)) < 1e-3  # the model it was made from: nothing to rehearse
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    moved = r.loss(ad, 4, gen)
    assert float(moved) > 0.01
    moved.backward()  # and it pulls the weights back: a gradient reaches what learns
    assert model.head.weight.grad is not None and float(model.head.weight.grad.abs().sum()) > 0
    # a second rehearsal from the same model composes the same pieces (its own seed, not the check's)
    again = rehearse.Rehearsal(ComposerLSTM.from_pretrained(tiny).eval(), seq_len=64, pieces=3)
    assert torch.equal(again.x, r.x) and rehearse.SEED != __import__(
        "classical_music.train.finetune_data", fromlist=["OWN_SEED"]).OWN_SEED


def test_the_base_models_memory_of_the_piece_carries_over(tmp_path, tiny):
    from classical_music.memory import settings

    base = ComposerLSTM.from_pretrained(tiny)
    block = {"default": "cache", "lambda": 0.3, "size": 500, "compose": {"default": "cache", "lambda": 0.9, "size": 400}}
    base.save_pretrained(tmp_path / "tuned", base.tokenizer, extra={"memory": block})
    out = tmp_path / "mine"
    finetune(cfg(folder_of(tmp_path / "midi"), out, tmp_path / "tuned", tmp_path, max_steps=4, rehearse=0))
    mine, start = ComposerLSTM.from_pretrained(out), ComposerLSTM.from_pretrained(tmp_path / "tuned")
    # yours is evaluated and composes with the memory the base model was tuned with, not with none
    assert settings.resolve(mine, None) == settings.resolve(start, None)
    assert settings.resolve(mine, None).mode == "cache" and settings.resolve(mine, None).size == 500
    assert settings.compose_block(mine)["size"] == 400
    # and a base without a tuned memory gives a model without one
    finetune(cfg(folder_of(tmp_path / "midi"), tmp_path / "plain", tiny, tmp_path, max_steps=4, rehearse=0))
    assert settings.stored(ComposerLSTM.from_pretrained(tmp_path / "plain")) == {}


def test_the_base_models_licence_and_training_data_carry_over(tmp_path, tiny):
    import json

    base = ComposerLSTM.from_pretrained(tiny)
    base.save_pretrained(tmp_path / "licensed", base.tokenizer,
                         extra={"license": "CC BY-NC-SA 4.0 (inherited from the training data)",
                                "training_data": "the corpus's train split"})
    out = tmp_path / "mine"
    finetune(cfg(folder_of(tmp_path / "midi"), out, tmp_path / "licensed", tmp_path, max_steps=2, rehearse=0))
    config = json.loads((out / "config.json").read_text())
    # the weights derive from the base's, so its terms travel with them, in the config and on the card
    assert config["license"] == "CC BY-NC-SA 4.0 (inherited from the training data)"
    assert config["training_data"].startswith("the corpus's train split; then fine-tuned on midi")
    assert "Licence: CC BY-NC-SA 4.0" in (out / "MODEL_CARD.md").read_text()
    # a base that names no licence gives no invented one
    finetune(cfg(folder_of(tmp_path / "midi"), tmp_path / "plain", tiny, tmp_path, max_steps=2, rehearse=0))
    assert "license" not in json.loads((tmp_path / "plain" / "config.json").read_text())


def tonal(tonic: int, n: int = 160, step: float = 0.22):
    """A melody in a major key: up and down the scale, leaning on the tonic triad, as pieces do."""
    degrees = [0, 4, 7, 12, 11, 9, 7, 5, 4, 2, 0, 7, 4, 0, 2, 4]
    return [(tonic + degrees[i % len(degrees)], i * step, step * 0.9, 50 + (i * 5) % 40) for i in range(n)]


def test_pieces_from_your_model_draw_their_home_keys_from_your_folder(tmp_path, tiny):
    from classical_music.generate import GenerateConfig

    folder = tmp_path / "midi"
    for i in range(8):  # G major and D major, none elsewhere
        write_midi(folder / f"piece{i}.mid", tonal(55 if i % 2 else 62))
    out = tmp_path / "mine"
    r = finetune(cfg(folder, out, tiny, tmp_path, max_steps=2, rehearse=0))
    block = json.loads((out / "config.json").read_text())[conditions.HOME_KEYS_KEY]
    assert set(block["counts"]) == {"G major", "D major"} and block["pieces"] == r["data"]["train_pieces"] == 6
    assert "keys your pieces open in" in (out / "MODEL_CARD.md").read_text() and "G major" in (out / "MODEL_CARD.md").read_text()
    # a piece asked for no key, through-composed (30 s) or planned (120 s), is most often in one of them
    model = ComposerLSTM.from_pretrained(out)
    from collections import Counter

    for seconds in (30, 120):
        plans = [p for s in range(30)
                 for p in GenerateConfig(output=tmp_path / "x.mid", seconds=seconds, num_samples=2).piece_plans(s, model)]
        assert {k for k, _ in Counter(p.home_key for p in plans).most_common(2)} == {"G major", "D major"}
    # the starting model has no such block: its through pieces find their own key
    start = ComposerLSTM.from_pretrained(tiny)
    assert GenerateConfig(output=tmp_path / "x.mid", seconds=30).piece_plans(0, start)[0].home_key is None
