"""Batched scoring (scoring.py) against the single-file path (evaluate.file_nll)."""

import json

import numpy as np
import pytest
import torch

from classical_music import cli, scoring
from classical_music.decoding import int8_available, int8_pack
from classical_music.evaluate import _read, collect, file_nll
from classical_music.model import ComposerLSTM, ModelConfig
from classical_music.tokenizer import get_tokenizer

from conftest import scale, write_midi


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def strong_model():
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=2)).eval()
    with torch.no_grad():  # strong weights, so the past (and a wrongly carried state) visibly matters
        for p in model.parameters():
            p.mul_(4)
    model.tokenizer = tok
    return model


def sequences(n=9, seed=0):
    rng = np.random.default_rng(seed)
    # lengths around and across the chunk (37) and batch (3) sizes, plus a two-token file
    lengths = [2, 5, 36, 37, 38, 120, 300, 75, 9][:n]
    return [rng.integers(3, 391, k).astype(np.uint16) for k in lengths]


def test_batched_equals_single_file_path(strong_model):
    seqs = sequences()
    items = [scoring.Item(i, s) for i, s in enumerate(seqs)]
    forward = scoring.make_forward(strong_model)
    for batch in (3, scoring.SPLIT_BELOW + 1):  # row by row while narrow, one nn.LSTM call when wide
        got = {k: (nats, n) for k, nats, n in scoring.score(forward, items, batch_size=batch, chunk=37)}
        assert sorted(got) == list(range(len(seqs)))
        for i, s in enumerate(seqs):
            want = file_nll(strong_model, s)
            assert got[i][1] == len(s) - 1
            assert abs(got[i][0] - want) / (len(s) - 1) < 1e-4, (batch, i, got[i][0], want)
    # a scorer that forgot to zero a refilled row's state would be caught: the test can tell
    reused = file_nll(strong_model, np.r_[seqs[5], seqs[6]]) - file_nll(strong_model, seqs[5])
    assert abs(reused - file_nll(strong_model, seqs[6])) > 1.0


def test_memory_is_bounded_and_cond_rides_with_its_row(strong_model):
    seqs = [np.full(k, 3 + i, np.uint16) for i, k in enumerate([50, 7, 200, 13, 90])]
    items = [scoring.Item(i, s, cond=np.float32(3 + i)) for i, s in enumerate(seqs)]
    shapes = []

    def forward(idx, state, cond):
        shapes.append(tuple(idx.shape))
        live = idx[:, 0] != 0  # rows padded from their start hold no file
        assert torch.equal(cond[live].long(), idx[live, 0]), "a row's cond must be its own file's"
        return strong_model(idx, state)

    got = {k: nats for k, nats, _ in scoring.score(forward, items, batch_size=2, chunk=16)}
    assert all(b <= 2 and t <= 16 for b, t in shapes)
    for i, s in enumerate(seqs):
        assert got[i] == pytest.approx(file_nll(strong_model, s), abs=1e-4 * len(s))
    with pytest.raises(ValueError, match="every item"):
        list(scoring.score(forward, [items[0], scoring.Item(9, seqs[1])], batch_size=2, chunk=16))


@pytest.mark.skipif(not int8_available(), reason="no int8 CPU kernels in this PyTorch")
def test_int8_is_close_on_real_music(shared_corpus):
    from classical_music.generate import load_model

    model = load_model(None, "cpu")
    files = collect([shared_corpus], "valid")[:3]
    seqs = [_read(p, model.tokenizer)[0][:1200] for p in files]
    events = sum(len(s) - 1 for s in seqs)
    want = sum(file_nll(model, s) for s in seqs) / events
    items = [scoring.Item(i, s) for i, s in enumerate(seqs)]
    got = sum(n for _, n, _ in scoring.score(scoring.make_forward(model, "int8"), items, batch_size=4, chunk=300))
    assert 0 < abs(got / events - want) < 2e-3  # close, yet really int8 (not the float path)


def test_cli_rejects_bad_options(tmp_path, capsys):
    write_midi(tmp_path / "a.mid", scale(10))
    for extra, message in ((["--batch_size", "0"], "--batch_size"), (["--threads", "-1"], "--threads"),
                           (["--precision", "int8", "--device", "cuda"], "CPU only")):
        assert cli.main(["evaluate", str(tmp_path / "a.mid"), "--no_progress", *extra]) == 2
        assert message in capsys.readouterr().err


def test_cli_int8_and_float_agree(tmp_path):
    src = tmp_path / "m"
    for i in range(3):
        write_midi(src / f"{i}.mid", scale(40 + 30 * i, base=50 + i))
    out = {}
    for precision in ("float32", "int8") if int8_available() else ("float32",):
        path = tmp_path / f"{precision}.json"
        assert cli.main(["evaluate", str(src), "--no_progress", "--precision", precision, "--batch_size", "2",
                         "--threads", "1", "--json", str(path)]) == 0
        out[precision] = json.loads(path.read_text())
    r = out["float32"]
    # the shipped model scores with its memory block's default (the cache), and says so
    assert set(r) == {"files", "skipped", "events", "notes", "seconds", "nats_per_event", "nats_per_note",
                      "bits_per_second", "perplexity", "tokenizer", "per_file", "conditions", "memory"}
    assert r["memory"]["mode"] == "cache"
    assert cli.main(["evaluate", str(src), "--no_progress", "--batch_size", "2", "--threads", "1", "--memory", "none",
                     "--json", str(tmp_path / "none.json")]) == 0
    assert "memory" not in json.loads((tmp_path / "none.json").read_text())
    assert [f["path"] for f in r["per_file"]] == [str(src / f"{i}.mid") for i in range(3)]  # given order
    if "int8" in out:
        assert out["int8"]["nats_per_event"] == pytest.approx(r["nats_per_event"], abs=5e-3)


def test_conditions_ride_with_their_rows_in_float_and_int8():
    from classical_music import conditions as C

    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=16, hidden_size=32, num_layers=2,
                                     conditions=C.vocabularies({"chopin": 2.0}))).eval()
    with torch.no_grad():
        for p in model.parameters():  # strong weights, so each file's conditions visibly matter
            p.mul_(4)
        for e in model.cond_embed.values():
            e.weight.normal_(0, 1.0)
    n = len(model.cond_embed)
    rng = np.random.default_rng(1)
    seqs = [rng.integers(3, tok.vocab_size, k).astype(np.uint16) for k in (60, 25, 90, 40)]
    conds = [np.where(np.arange(n) == i % n, 0, 1) for i in range(len(seqs))]  # a different one per file
    with torch.inference_mode():
        want = []
        for s_, c in zip(seqs, conds):
            x = torch.as_tensor(s_.astype(np.int64))[None]
            logits, _ = model(x[:, :-1], cond=torch.as_tensor(c)[None])
            want.append(torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum").item())
        plain = [file_nll(model, s_) for s_ in seqs]
    assert min(abs(w - p) / (len(s_) - 1) for w, p, s_ in zip(want, plain, seqs)) > 0.05  # conditions matter
    items = [scoring.Item(i, s_, cond=c) for i, (s_, c) in enumerate(zip(seqs, conds))]
    precisions = ("float32", "int8") if int8_available() else ("float32",)
    for precision, tol in zip(precisions, (1e-4, 1e-1)):
        got = {k: v for k, v, _ in scoring.score(scoring.make_forward(model, precision), items, batch_size=3, chunk=16)}
        for i, s_ in enumerate(seqs):
            assert abs(got[i] - want[i]) / (len(s_) - 1) < tol, (precision, i)
            # int8 on these deliberately strong random weights is only roughly the function, so
            # it must at least land nearer its own file's conditions than no conditions at all
            assert abs(got[i] - want[i]) < abs(got[i] - plain[i]), (precision, i)


@pytest.mark.skipif(not int8_available(), reason="no int8 CPU kernels in this PyTorch")
def test_int8_residual_rows_and_scripted_loop():
    torch.manual_seed(0)
    hid = 32
    w = torch.randn(4 * hid, hid) * 0.3
    packed = int8_pack(w, residual=slice(2 * hid, 3 * hid))
    rr = scoring._reduce_range()
    half = 64 if rr else 128  # 7- or 8-bit activations
    x = torch.randint(-half, half, (5, hid)).float()  # on the activation grid (scale 1), so that
    x[0, :2] = torch.tensor([-half, half - 1.0])        # only the weights' rounding is left
    with torch.inference_mode():
        y = torch.ops.quantized.linear_dynamic(x, packed, rr)
    exact = x @ w.t()
    assert y.shape == (5, 5 * hid)  # the g rows' residual rides as 32 extra outputs
    plain_err = (y[:, 2 * hid:3 * hid] - exact[:, 2 * hid:3 * hid]).abs().mean()
    fixed_err = (y[:, 2 * hid:3 * hid] + y[:, 4 * hid:] - exact[:, 2 * hid:3 * hid]).abs().mean()
    assert fixed_err < plain_err / 20
    # the TorchScript loop (when this PyTorch can script it) is the Python loop, step for step
    gates = torch.randn(7, 5, 4 * hid)
    h0, c0 = torch.rand(5, hid) - 0.5, torch.rand(5, hid) - 0.5
    outs = []
    for loop in {scoring._recurrence(), scoring._recurrence_py}:
        out = torch.empty(7, 5, hid)
        with torch.inference_mode():
            h, c = loop(gates, h0, c0, packed, rr, out)
        assert torch.equal(out[-1], h)
        outs.append((out, c))
    for out, c in outs[1:]:
        torch.testing.assert_close(out, outs[0][0])
        torch.testing.assert_close(c, outs[0][1])


@pytest.mark.skipif(not int8_available(), reason="no int8 CPU kernels in this PyTorch")
@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("reduce_range", [True, False])
@pytest.mark.parametrize("scripted", [True, False])
def test_int8_scorer_branches_agree_with_float(monkeypatch, bf16, reduce_range, scripted):
    # every CPU takes one branch of each: bf16 or float32 projections (and, with bf16, a bf16
    # recurrence for wide batches), 7- or 8-bit activations, the TorchScript loop or its Python
    # fallback; here each is forced in turn, and batch 2 counts as wide
    tok = get_tokenizer("performance")
    torch.manual_seed(0)
    model = ComposerLSTM(ModelConfig(vocab_size=tok.vocab_size, embed_size=16, hidden_size=32, num_layers=3)).eval()
    monkeypatch.setattr(scoring, "_native_bf16", lambda: bf16)
    monkeypatch.setattr(scoring, "_reduce_range", lambda: reduce_range)
    monkeypatch.setattr(scoring, "BF16_FROM", 2)
    if not scripted:
        monkeypatch.setattr(scoring, "_recurrence", lambda: scoring._recurrence_py)
        monkeypatch.setattr(scoring, "_recurrence_bf16", lambda: scoring._recurrence_bf16_py)
    rng = np.random.default_rng(2)
    seqs = [rng.integers(3, tok.vocab_size, k).astype(np.uint16) for k in (300, 40, 170)]
    want = [file_nll(model, s_) for s_ in seqs]
    forward = scoring.make_forward(model, "int8")
    assert forward.ih[1][0].dtype == (torch.bfloat16 if bf16 else torch.float32)
    # oneDNN packs bf16 weights only on CPUs with AVX-512 (or AVX-NE-CONVERT): elsewhere the
    # recurrence stays int8 even when bf16 is forced
    can_pack = scoring._bf16_pack([torch.ones(8, 2)]) is not None
    assert (forward.hh_bf16 is not None) == (bf16 and can_pack)
    got = {k: v for k, v, _ in scoring.score(forward, [scoring.Item(i, s_) for i, s_ in enumerate(seqs)],
                                             batch_size=2, chunk=64)}
    for i, s_ in enumerate(seqs):
        assert got[i] / (len(s_) - 1) == pytest.approx(want[i] / (len(s_) - 1), abs=5e-3)
