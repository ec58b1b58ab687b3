"""The conditions package is the one list of conditions: flags, config fields, the studio's models
and menus, evaluate, the cache and `data prepare`'s filters all follow its specs."""

import argparse
import dataclasses

import numpy as np
import pytest

from classical_music import conditions as C
from classical_music.data.prepare import PrepareConfig, prepare
from classical_music.generate import GenerateConfig, add_arguments
from classical_music.tokenizer import get_tokenizer

from conftest import scale, write_midi


def test_every_layer_lists_the_specs():
    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = {a.dest for a in p._actions}
    assert set(C.NAMES) <= flags
    assert set(C.NAMES) <= {f.name for f in dataclasses.fields(GenerateConfig)}
    assert GenerateConfig(density=8, key="Am").style() == {**dict.fromkeys(C.NAMES), "density": 8, "key": "Am"}
    assert [m["name"] for m in C.menus()] == list(C.NAMES)
    assert {m["name"]: m["menu"] for m in C.menus()}["density"] == "number"
    assert C.FILE_CONDITIONS + C.EVENT_CONDITIONS == C.NAMES
    # a spec's values are its vocabulary; every spec parses its own values back to themselves
    vocab = C.vocabularies({"chopin": 2.0})
    for c in C.CONDITIONS:
        for label in vocab[c.name][1:]:
            if label != C.OTHER:
                assert c.parse(label) == label, (c.name, label)


def test_evaluate_flags_are_the_metadata_conditions():
    from classical_music.evaluate import add_parser

    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    p = sub.choices["evaluate"]
    flags = {a.dest for a in p._actions}
    assert set(C.FILE_CONDITIONS) <= flags and not set(C.EVENT_CONDITIONS) & flags


def test_parse_once_then_encode_without_parsing(monkeypatch):
    vocab = C.vocabularies({"chopin": 2.0})
    parsed = C.parse_request({"key": "F# minor", "density": 8, "composer": "Frédéric Chopin", "period": "any"})
    assert parsed == {"key": "F# minor", "density": "8", "composer": "chopin"}
    calls = []
    monkeypatch.setitem(C.BY_NAME, "key", dataclasses.replace(C.BY_NAME["key"], parse=calls.append))
    codes = C.encode_request(vocab, parsed, key="F# minor", density=8, composer="Frédéric Chopin")
    assert not calls and vocab["key"][codes["key"]] == "F# minor" and vocab["density"][codes["density"]] == "8"


def test_event_conditions_have_a_column_per_event_spec():
    tok = get_tokenizer("performance")
    from classical_music.notes import Notes

    n = 40
    notes = Notes(np.arange(n) * 0.25, np.arange(n) * 0.25 + 0.2, np.array([60, 64, 67, 72] * 10, np.int16),
                  np.full(n, 70, np.int16))
    ev = C.event_conditions(tok.encode_notes(notes), tok)
    assert ev.shape[1] == len(C.EVENT_CONDITIONS)
    key = ev[:, C.EVENT_CONDITIONS.index("key")]
    assert C.KEYS[int(np.bincount(key).argmax()) - 1] == "C major"
    moved = C.BY_NAME["key"].transpose(key, 2)
    assert C.KEYS[int(np.bincount(moved).argmax()) - 1] == "D major"


@pytest.mark.parametrize("asked", ["Frédéric Chopin", "chopin", "Chopin, Frédéric", "F. CHOPIN"])
def test_prepare_composer_filter_normalises_like_generate(tmp_path, asked):
    src = tmp_path / "src"
    write_midi(src / "a.mid", scale(8, base=60))
    write_midi(src / "b.mid", scale(8, base=62))
    (src / "metadata.csv").write_text("path,composer\na.mid,\"Chopin, Frédéric\"\nb.mid,J.S. Bach\n", encoding="utf-8")
    r = prepare(PrepareConfig(source=src, out=tmp_path / "out", composer=[asked], progress=False))
    assert r["prepared"] == 1


def test_aria_composer_filter_normalises(tmp_path):
    from classical_music.data import aria

    assert aria._norm("composer", ["Frédéric Chopin"]) == aria._values("composer", {"composer": "Chopin, F."},
                                                                       ("composer",)) == {"chopin"}
    assert aria._norm("genre", ["Classical "]) == {"classical"}
