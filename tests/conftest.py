"""Shared test helpers: tiny MIDI files written on the spot, and the shared corpus when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import symusic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "classical-piano"


def tiny_checkpoint(path: Path, tokenizer: str = "performance") -> Path:
    """The 2 x 32 untrained model that test_generate and test_form compose with (test_form's
    reference hashes were made with it), its EOS lowered so it composes for a while."""
    import torch

    from classical_music.model import ComposerLSTM, ModelConfig
    from classical_music.tokenizer import get_tokenizer

    tok = get_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=16, hidden_size=32, num_layers=2))
    with torch.no_grad():
        model.head.bias[tok.eos_id] = -20
    model.save_pretrained(path, tokenizer=tok)
    return path


def write_midi(path, notes, pedals=(), drum=False, tpq=480, bpm=120.0):
    """notes: (pitch, start_s, dur_s, velocity); pedals: (down_s, up_s). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, bpm))
    tps = tpq * bpm / 60
    track = symusic.Track(program=0, is_drum=drum)
    for pitch, start, dur, vel in notes:
        track.notes.append(symusic.Note(round(start * tps), max(1, round(dur * tps)), pitch, vel))
    for down, up in pedals:
        track.controls.append(symusic.ControlChange(round(down * tps), 64, 127))
        track.controls.append(symusic.ControlChange(round(up * tps), 64, 0))
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def scale(n=16, start=0.0, step=0.25, base=60):
    return [(base + (i * 2) % 24, start + i * step, step * 0.9, 40 + (i * 7) % 80) for i in range(n)]


@pytest.fixture(autouse=True)
def no_user_instruments(tmp_path_factory, monkeypatch):
    """Tests never play (or find damaged) a piano the developer installed in their own cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.delenv("CLASSICAL_MUSIC_PIANO", raising=False)


@pytest.fixture
def midi_dir(tmp_path):
    """A folder of a few short, valid piano pieces."""
    d = tmp_path / "midi"
    for i in range(6):
        write_midi(d / f"piece{i}.mid", scale(24 + 4 * i, base=48 + i))
    return d


@pytest.fixture
def shared_corpus():
    if not (SHARED / "metadata.csv").exists():
        pytest.skip("../shared/data/classical-piano not present")
    return SHARED
