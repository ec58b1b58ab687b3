import numpy as np
import pytest
import torch

from classical_music.data.dataset import PIANO_LOW, PIANO_HIGH, AugmentConfig, WindowDataset
from classical_music.data.prepare import PrepareConfig, prepare
from classical_music.errors import UserError

from conftest import scale, write_midi


@pytest.fixture
def cache(tmp_path, midi_dir):
    out = tmp_path / "cache"
    write_midi(midi_dir / "long.mid", scale(400, base=40))
    prepare(PrepareConfig(source=midi_dir, out=out, progress=False, valid_fraction=0.0))
    return out


def test_windows_are_shifted_targets(cache):
    ds = WindowDataset(cache, "train", seq_len=32)
    assert len(ds) > 7
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (32,) and x.dtype == torch.int64
        n = int((y != 0).sum())
        assert torch.equal(x[1:n], y[: n - 1])  # y is x moved one step
    # short files are padded, and padding is never a target
    ds_long = WindowDataset(cache, "train", seq_len=1024)
    padded = [bool((ds_long[i][1] == 0).any()) for i in range(len(ds_long))]
    assert any(padded) and not all(padded)


def test_windows_cover_a_file_and_jitter_per_epoch(cache):
    ds = WindowDataset(cache, "train", seq_len=32, seed=3)
    before = [ds[i][0].tolist() for i in range(len(ds))]
    assert [ds[i][0].tolist() for i in range(len(ds))] == before  # deterministic
    ds.set_epoch(1)
    after = [ds[i][0].tolist() for i in range(len(ds))]
    assert after != before
    assert ds.num_tokens > 0


def test_missing_valid_split_is_empty(cache):
    assert len(WindowDataset(cache, "valid", seq_len=32)) == 0


def test_missing_cache_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data prepare"):
        WindowDataset(tmp_path / "none")


def test_augmentation_is_deterministic_and_stays_on_the_piano(cache):
    aug = AugmentConfig(transpose=6, stretch=0.1, velocity=3)
    a = WindowDataset(cache, "train", seq_len=64, augment=aug, seed=7)
    b = WindowDataset(cache, "train", seq_len=64, augment=aug, seed=7)
    plain = WindowDataset(cache, "train", seq_len=64, seed=7)
    tok = a.tokenizer
    changed = 0
    for i in range(len(a)):
        xa, _ = a[i]
        assert torch.equal(xa, b[i][0])
        changed += not torch.equal(xa, plain[i][0])
        t = xa.numpy()
        notes = (t >= tok.note_on) & (t < tok.time_shift)
        pitch = np.where(t < tok.note_off, t - tok.note_on, t - tok.note_off)[notes]
        assert pitch.min() >= PIANO_LOW and pitch.max() <= PIANO_HIGH
        assert t.max() < tok.vocab_size
    assert changed > len(a) // 2


def test_stretch_scales_time_and_keeps_notes(cache):
    ds = WindowDataset(cache, "train", seq_len=64)
    tok = ds.tokenizer
    t = ds.cache.tokens(0).astype(np.int64)
    s = tok.stretch(t, 1.2)
    assert tok.shift_steps(s).sum() == pytest.approx(tok.shift_steps(t).sum() * 1.2, rel=0.02)
    keep = lambda x: x[(x < tok.time_shift)]  # noqa: E731  everything but time shifts is untouched
    assert np.array_equal(keep(s), keep(t))
