"""ComposerLSTM: shapes, carried state, Hugging Face-style checkpoints and their failure modes."""

import json
import os

import pytest
import torch

from classical_music.checkpoint import atomic_folder
from classical_music.decoding import StepDecoder
from classical_music.errors import UserError
from classical_music.model import ComposerLSTM, ModelConfig

VOCAB = 40


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and a second OpenMP thread stalls badly whenever
    # another process holds the other core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**kw) -> ComposerLSTM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, embed_size=16, hidden_size=32, num_layers=2, dropout=0.1)
    cfg.update(kw)
    return ComposerLSTM(ModelConfig(**cfg)).eval()


def tokens(b=3, t=20, seed=1):
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes():
    m = tiny()
    logits, (h, c) = m(tokens(3, 20))
    assert logits.shape == (3, 20, VOCAB)
    assert h.shape == c.shape == (2, 3, 32)


def test_state_carry_equals_whole_sequence():
    m = tiny()
    x = tokens(2, 17)
    whole, _ = m(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        out, state = m(x[:, t : t + 1], state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-5, atol=1e-5)
    # chunks of uneven length carry the same way
    a, s = m(x[:, :5])
    b, _ = m(x[:, 5:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers, tie, embed", [(2, False, 16), (1, True, 16), (3, True, 32)])
def test_step_matches_forward(layers, tie, embed):
    # StepDecoder is generation's fast path; it must be the same function as forward() on one event.
    m = tiny(num_layers=layers, tie_weights=tie, embed_size=embed)
    x = tokens(3, 12)
    whole, (h_all, c_all) = m(x)
    _, state = m(x[:, :4])
    dec = StepDecoder(m)
    for t in range(4, 12):
        logits, state = dec(x[:, t], state)
        torch.testing.assert_close(logits, whole[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(state[0]), h_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(state[1]), c_all, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("embed", [16, 32])
def test_tied_weights_share_the_embedding(embed):
    m = tiny(embed_size=embed, tie_weights=True)
    assert m.head.weight is m.embed.weight
    assert (m.proj is None) == (embed == 32)  # projection only when sizes differ
    untied = tiny(embed_size=embed)
    assert m.num_parameters() < untied.num_parameters()
    assert m(tokens())[0].shape == (3, 20, VOCAB)


def test_num_parameters_counts_everything():
    m = tiny()
    assert m.num_parameters() == sum(p.numel() for p in m.parameters()) > 0


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError):
        ModelConfig(vocab_size=0)
    with pytest.raises(UserError):
        ModelConfig(vocab_size=10, dropout=1.5)


@pytest.mark.parametrize("tie", [False, True])
def test_save_load_roundtrip(tmp_path, tie):
    from classical_music.tokenizer import get_tokenizer

    tok = get_tokenizer("performance")
    m = tiny(vocab_size=tok.vocab_size, tie_weights=tie)
    x = torch.randint(0, tok.vocab_size, (2, 12))
    m.save_pretrained(tmp_path / "ck", tokenizer=tok, extra={"training": {"step": 7}, "vocab_size": -1})
    assert sorted(os.listdir(tmp_path / "ck")) == ["config.json", "model.safetensors", "tokenizer.json"]
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["model_type"] == "classical-music-lstm"
    assert cfg["training"] == {"step": 7} and cfg["vocab_size"] == tok.vocab_size  # model keys win
    for where in (tmp_path / "ck", tmp_path / "ck" / "model.safetensors"):
        loaded = ComposerLSTM.from_pretrained(where)
        assert not loaded.training
        assert loaded.tokenizer.to_dict() == tok.to_dict()
        assert torch.equal(loaded(x)[0], m(x)[0])
        if tie:
            assert loaded.head.weight is loaded.embed.weight


def test_float16_storage_loads_back_float32(tmp_path):
    m = tiny()
    m.save_pretrained(tmp_path / "full")
    m.save_pretrained(tmp_path / "half", dtype=torch.float16)
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = ComposerLSTM.from_pretrained(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = tokens()
    torch.testing.assert_close(loaded(x)[0], m(x)[0], rtol=0, atol=2e-3)


def test_save_replaces_atomically_and_leaves_no_debris(tmp_path):
    ck = tmp_path / "ck"
    tiny().save_pretrained(ck)
    newer = tiny(dropout=0.3)
    with torch.no_grad():
        newer.head.bias.fill_(1.0)
    newer.save_pretrained(ck)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert torch.equal(ComposerLSTM.from_pretrained(ck).head.bias, newer.head.bias)


def test_crash_mid_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    ck = tmp_path / "ck"
    old = tiny()
    old.save_pretrained(ck)

    def dies_halfway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", dies_halfway)
    with pytest.raises(OSError):
        tiny(dropout=0.3).save_pretrained(ck)
    monkeypatch.undo()
    loaded = ComposerLSTM.from_pretrained(ck)
    assert loaded.config.dropout == old.config.dropout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_crash_between_renames_is_recovered(tmp_path):
    ck = tmp_path / "ck"
    tiny().save_pretrained(ck)
    os.replace(ck, tmp_path / ".ck.old")  # killed after moving the old copy away
    (tmp_path / ".ck.tmp-dead").mkdir()  # and a half-written new one
    assert ComposerLSTM.from_pretrained(ck).config.hidden_size == 32
    tiny().save_pretrained(ck)  # the next save sweeps the debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_atomic_folder_exception_leaves_target_untouched(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a").write_text("new")
            raise RuntimeError("boom")
    assert (target / "a").read_text() == "old"


def _broken(tmp_path, how):
    ck = tmp_path / "ck"
    tiny().save_pretrained(ck)
    cfg_path, weights = ck / "config.json", ck / "model.safetensors"
    if how == "missing folder":
        return tmp_path / "nope"
    if how == "no config":
        cfg_path.unlink()
    elif how == "corrupt config":
        cfg_path.write_text("{not json")
    elif how == "other model type":
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "model_type": "gpt2"}))
    elif how == "config without vocab":
        cfg = json.loads(cfg_path.read_text())
        del cfg["vocab_size"]
        cfg_path.write_text(json.dumps(cfg))
    elif how == "no weights":
        weights.unlink()
    elif how == "corrupt weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "garbage weights":
        weights.write_bytes(b"\xff" * 64)
    elif how == "mismatched shapes":
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "hidden_size": 48}))
    elif how == "missing tensor":
        from safetensors.torch import load_file, save_file

        t = load_file(weights)
        del t["head.bias"]
        save_file(t, weights)
    return ck


@pytest.mark.parametrize("how", [
    "missing folder", "no config", "corrupt config", "other model type", "config without vocab",
    "no weights", "corrupt weights", "garbage weights", "mismatched shapes", "missing tensor",
])
def test_from_pretrained_errors_are_one_line_user_errors(tmp_path, how):
    path = _broken(tmp_path, how)
    with pytest.raises(UserError) as e:
        ComposerLSTM.from_pretrained(path)
    assert "\n" not in str(e.value) and str(e.value)


def test_decoder_builds_on_another_device():
    # The decoder's constants must follow the weights (a CUDA model must not meet CPU tensors);
    # "meta" stands in for a GPU here. int8 is CPU only and says so.
    m = tiny(num_layers=3).to("meta")
    logits, (h, c) = StepDecoder(m)(torch.zeros(2, dtype=torch.long, device="meta"),
                                    (torch.zeros(3, 2, 32, device="meta"), torch.zeros(3, 2, 32, device="meta")))
    assert logits.shape == (2, VOCAB) and logits.device.type == "meta" and len(h) == len(c) == 3
    with pytest.raises(ValueError, match="CPU"):
        StepDecoder(m, int8=True)


def test_kept_decoders_are_built_once_per_precision():
    # sample() builds a decoder per piece (the weights may have changed since); the studio, which
    # never trains, keeps one per precision (keep_decoders).
    from classical_music.decoding import keep_decoders, step_decoder

    m = tiny()
    assert step_decoder(m) is not step_decoder(m)
    keep_decoders(m)
    assert step_decoder(m) is step_decoder(m) and not step_decoder(m).int8
    assert step_decoder(m, int8=False) is step_decoder(m)
