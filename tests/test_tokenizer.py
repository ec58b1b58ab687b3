import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classical_music.errors import UserError
from classical_music.notes import Notes, fold_pedal, load_score, score_to_notes
from classical_music.tokenizer import get_tokenizer, load_tokenizer

from conftest import write_midi

TOK = get_tokenizer("performance")


def test_vocabulary_is_performance_rnn():
    assert TOK.vocab_size == 3 + 128 + 128 + 100 + 32
    names = TOK.describe(range(TOK.vocab_size))
    assert sum(n.startswith("NOTE_ON_") for n in names) == 128
    assert sum(n.startswith("NOTE_OFF_") for n in names) == 128
    assert sum(n.startswith("TIME_SHIFT_") for n in names) == 100
    assert sum(n.startswith("VELOCITY_") for n in names) == 32
    assert names[:3] == ["PAD", "BOS", "EOS"]
    assert "TIME_SHIFT_10ms" in names and "TIME_SHIFT_1000ms" in names


@st.composite
def note_sets(draw):
    n = draw(st.integers(1, 40))
    notes = []
    for _ in range(n):
        pitch = draw(st.integers(0, 127))
        on = draw(st.floats(0, 20, allow_nan=False))
        dur = draw(st.floats(0.02, 4, allow_nan=False))
        vel = draw(st.integers(1, 127))
        notes.append((on, on + dur, pitch, vel))
    # a key cannot sound twice at once: keep the inputs playable (as pedal folding guarantees)
    notes.sort(key=lambda x: (x[2], x[0]))
    kept = []
    for on, off, p, v in notes:
        if kept and kept[-1][2] == p and on < kept[-1][1] + 0.02:
            continue
        kept.append((on, off, p, v))
    a = np.array(kept, dtype=np.float64)
    return Notes(a[:, 0], a[:, 1], a[:, 2].astype(np.int16), a[:, 3].astype(np.int16)).sorted()


def _match(a: Notes, b: Notes):
    """Pairs notes by pitch and order of onset (rounding can reorder simultaneous pitches)."""
    out = []
    for p in np.unique(a.pitch):
        ia, ib = np.flatnonzero(a.pitch == p), np.flatnonzero(b.pitch == p)
        assert len(ia) == len(ib), f"pitch {p}: {len(ia)} vs {len(ib)} notes"
        out += list(zip(ia[np.argsort(a.onset[ia])], ib[np.argsort(b.onset[ib])]))
    return np.array(out)


@settings(max_examples=150, deadline=None)
@given(note_sets())
def test_roundtrip_within_10ms_and_one_velocity_bin(notes):
    tokens = TOK.encode_notes(notes)
    assert tokens[0] == TOK.bos_id and tokens[-1] == TOK.eos_id
    assert tokens.max() < TOK.vocab_size
    back = TOK.decode(tokens)
    assert len(back) == len(notes)
    m = _match(notes, back)
    assert np.abs(notes.onset[m[:, 0]] - back.onset[m[:, 1]]).max() <= 0.010 + 1e-9
    assert np.abs(notes.offset[m[:, 0]] - back.offset[m[:, 1]]).max() <= 0.010 + 1e-9
    bins = TOK.velocity_to_bin(notes.velocity[m[:, 0]]) - TOK.velocity_to_bin(back.velocity[m[:, 1]])
    assert np.abs(bins).max() == 0
    assert np.abs(notes.velocity[m[:, 0]] - back.velocity[m[:, 1]]).max() <= TOK.bin_size


def test_long_gap_uses_several_time_shifts():
    notes = Notes(np.array([0.0, 3.55]), np.array([0.5, 4.0]), np.array([60, 62], np.int16), np.array([80, 80], np.int16))
    names = TOK.describe(TOK.encode_notes(notes))
    assert names.count("TIME_SHIFT_1000ms") == 3
    assert "TIME_SHIFT_50ms" in names
    assert names.count("VELOCITY_19") == 1  # velocity is only restated when it changes


def test_zero_length_and_restruck_notes_survive():
    notes = Notes(np.array([1.0, 1.0, 1.5]), np.array([1.0, 1.5, 2.0]), np.array([60, 64, 64], np.int16),
                  np.array([50, 60, 70], np.int16))
    back = TOK.decode(TOK.encode_notes(notes))
    assert len(back) == 3
    assert back.pitch.tolist() == [60, 64, 64]
    assert np.allclose(back.offset, [1.0, 1.5, 2.0])


def test_sustain_pedal_extends_notes_until_release_or_restrike(tmp_path):
    path = write_midi(
        tmp_path / "pedal.mid",
        [(60, 0.0, 0.2, 80), (64, 0.5, 0.2, 80), (64, 1.5, 0.2, 80), (67, 3.0, 0.2, 80)],
        pedals=[(0.1, 2.0)],
    )
    notes = score_to_notes(load_score(path))
    by = {(int(p), round(float(o), 2)): float(f) for p, o, f in zip(notes.pitch, notes.onset, notes.offset)}
    assert by[(60, 0.0)] == pytest.approx(2.0, abs=0.01)  # held by the pedal until it lifts
    assert by[(64, 0.5)] == pytest.approx(1.5, abs=0.01)  # cut by its own re-strike
    assert by[(64, 1.5)] == pytest.approx(2.0, abs=0.01)
    assert by[(67, 3.0)] == pytest.approx(3.2, abs=0.01)  # pedal up: its own length


def test_fold_pedal_with_no_pedal_only_clips_overlaps():
    on = np.array([0.0, 0.5])
    off = np.array([1.0, 0.7])
    out = fold_pedal(on, off, np.array([60, 60]), np.zeros(0), np.zeros(0))
    assert out.tolist() == [0.5, 0.7]


def test_a_key_struck_twice_at_one_instant_sounds_until_the_longer_release():
    # input order must not matter: the doubled strike is one strike held to the later release
    for order in ([0, 1, 2], [1, 0, 2]):
        on = np.array([0.0, 0.0, 2.0])[order]
        off = np.array([0.4, 1.5, 2.5])[order]
        out = fold_pedal(on, off, np.array([60, 60, 60]), np.zeros(0), np.zeros(0))
        assert sorted(out[:2].tolist()) == [0.4, 1.5] and out[2] == 2.5
        tokens = TOK.encode_notes(Notes(on, out, np.full(3, 60, np.int16), np.full(3, 64, np.int16)))
        back = TOK.decode(tokens)
        assert back.onset.tolist() == [0.0, 2.0]
        assert back.offset.tolist() == pytest.approx([1.5, 2.5])


def test_ten_thousand_notes_at_one_instant_are_bounded():
    n = 10_000
    notes = Notes(np.zeros(n), np.full(n, 0.5), (np.arange(n) % 128).astype(np.int16), np.full(n, 64, np.int16))
    tokens = TOK.encode_notes(notes)
    assert len(tokens) < 2 * 128 + 10


def test_tokenizer_json_roundtrip(tmp_path):
    from classical_music.tokenizer import NAMES
    from classical_music.tokenizer.base import _REGISTRY

    get_tokenizer("performance")  # registers them all
    assert NAMES == tuple(_REGISTRY)  # the flags' choices are the registered tokenizers
    for name in NAMES:
        tok = get_tokenizer(name)
        tok.save(tmp_path / name)
        again = load_tokenizer(tmp_path / name)
        assert again.to_dict() == tok.to_dict()
        assert again.vocab_size == tok.vocab_size


def test_unknown_or_corrupt_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        get_tokenizer("nope")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError):
        load_tokenizer(tmp_path)


def test_remi_encodes_and_decodes_through_miditok(tmp_path):
    path = write_midi(tmp_path / "s.mid", [(60 + i, i * 0.25, 0.25, 80) for i in range(12)])
    tok = get_tokenizer("remi")
    notes = score_to_notes(load_score(path))
    tokens = tok.encode_notes(notes)
    names = tok.describe(tokens)
    assert names[0] == "BOS_None" and names[-1] == "EOS_None"
    assert any(n.startswith("Bar") for n in names) and any(n.startswith("Position") for n in names)
    back = tok.decode(tokens)
    assert sorted(back.pitch.tolist()) == list(range(60, 72))
    assert np.allclose(np.sort(back.onset), np.arange(12) * 0.25, atol=0.07)
