"""Memory of the piece: the continuous cache (scoring and sampling) against a direct, slow
implementation, dynamic evaluation's weight reset, tune-memory's block and --memory none."""

import json
import math

import numpy as np
import pytest
import torch

from classical_music import cli, dynamic, memory, memory_tune, scoring
from classical_music.errors import UserError
from classical_music.model import ComposerLSTM

from conftest import scale, write_midi
from test_scoring import one_thread, strong_model  # noqa: F401  (fixtures: one thread, a tiny model with strong weights)


def sequences():
    rng = np.random.default_rng(0)
    # few distinct events, so the cache often holds the next one; lengths across chunk and size
    return [rng.integers(3, 20, k).astype(np.uint16) for k in (2, 5, 36, 37, 38, 120, 300, 75, 9)]


def slow_motifs(nexts, mem, proposes, width):
    """The motifs recall by brute force: every earlier key-down whose last MOTIF intervals equal the
    piece's last MOTIF, its follower taken size ... gap + 1 steps back; the latest MATCHES votes."""
    kd = [(y - proposes.start, i) for i, y in enumerate(nexts) if proposes.start <= y < proposes.stop]
    n, t, k = len(kd) - 1, len(nexts), memory.MOTIF
    if n < k:
        return None
    iv = lambda e: [kd[i + 1][0] - kd[i][0] for i in range(e - k, e)]  # noqa: E731
    votes = []
    for j in range(n - 1, k - 1, -1):
        if iv(j) == iv(n) and t - mem.size <= kd[j + 1][1] < t - mem.gap:
            p = kd[n][0] + kd[j + 1][0] - kd[j][0]
            if 0 <= p < width:
                votes.append(p)
    votes = votes[:memory.MATCHES]
    return torch.bincount(torch.tensor(votes), minlength=width).double() / len(votes) if votes else None


def slow_mixture(p, h, keys, nexts, mem, proposes=None):
    """One step of the cache as the paper writes it, in float64: p [V] the model's, h [H] the query,
    keys/nexts every earlier step; the window is the `size` steps back less the newest `gap`, and
    with `proposes` only the steps followed by one of those ids, mixed inside that class."""
    t = len(keys)
    if mem.recall == "motifs":
        got = slow_motifs(nexts, mem, proposes, proposes.stop - proposes.start)
        if got is None:
            return p
        p_cache = torch.zeros_like(p)
        p_cache[proposes] = got
        return _inside(p, p_cache, mem, proposes, nexts)
    pick = [i for i in range(max(0, t - mem.size), t - mem.gap)
            if proposes is None or proposes.start <= nexts[i] < proposes.stop]
    if not pick:
        return p
    w = torch.exp(mem.theta * (torch.stack([keys[i] for i in pick]) @ h))
    p_cache = torch.zeros_like(p).index_add_(0, torch.tensor([nexts[i] for i in pick]), w / w.sum())
    if proposes is None:
        return (1 - mem.lam) * p + mem.lam * p_cache
    return _inside(p, p_cache, mem, proposes, nexts)


def _inside(p, p_cache, mem, proposes, nexts):
    """The mixture inside the proposed class (events "notes"), each pitch weighed by the register."""
    c = p_cache[proposes]
    if mem.register:  # each recalled pitch weighed by its distance to the nearest of the last 8 key-downs
        recent = [y - proposes.start for y in nexts if proposes.start <= y < proposes.stop][-8:]
        d = torch.tensor([min(abs(w - r) for r in recent) for w in range(len(c))], dtype=torch.float64)
        c = c * torch.exp(-0.5 * (d / mem.register) ** 2)
    out = p.clone()
    out[proposes] = (1 - mem.lam * c.sum()) * p[proposes] + mem.lam * p[proposes].sum() * c
    return out


def slow_logprobs(model, tokens, mem, proposes=None):
    """The cache one event at a time in float64 (slow_mixture at each step)."""
    x = torch.as_tensor(tokens.astype(np.int64)).unsqueeze(0)
    state, keys, nexts, out = None, [], [], []
    with torch.no_grad():
        for t in range(len(tokens) - 1):
            logits, state, h = model(x[:, t:t + 1], state, return_hidden=True)
            h = h[0, 0].double()
            p = slow_mixture(torch.softmax(logits[0, 0].double(), -1), h, keys, nexts, mem, proposes)
            nxt = int(tokens[t + 1])
            out.append(math.log(p[nxt].item()))
            keys.append(h)
            nexts.append(nxt)
    return np.array(out)


# the plain cache; one blind to its newest events; one proposing a class of ids only (key-downs in
# a real tokenizer; here 3..11 of the sequences' 3..19, so targets fall both in and out of it)
VARIANTS = [(dict(theta=0.3, lam=0.3, size=50), None), (dict(theta=0.3, lam=0.3, size=50, gap=7), None),
            (dict(theta=0.5, lam=0.4, size=40, gap=3, events="notes"), slice(3, 12)),
            (dict(lam=0.7, size=60, gap=3, events="notes", recall="motifs"), slice(3, 12))]


def motif_sequences():
    """Key-downs (3..11) in a few figures that return, transposed too, among other events (12..19)."""
    rng = np.random.default_rng(1)
    out = []
    for k in (40, 150, 300):
        fig = [3, 5, 7, 5, 8, 6]
        seq = []
        while len(seq) < k:
            r = rng.random()
            shift = int(rng.integers(0, 3))
            seq += [x + shift for x in fig] if r < 0.5 else rng.integers(3, 20, 5).tolist()
            seq.append(int(rng.integers(12, 20)))
        out.append(np.array(seq[:k], np.uint16))
    return out


@torch.no_grad()
@pytest.mark.parametrize("kw,proposes", VARIANTS)
def test_batched_cache_equals_slow_reference(strong_model, kw, proposes):
    mem = memory.Memory("cache", **kw)
    seqs = sequences() + motif_sequences()
    slow = [slow_logprobs(strong_model, s, mem, proposes) for s in seqs]
    # per event: cache_logprob chunk by chunk (history carried), mixed, against the slow path
    fw = scoring.make_forward(strong_model, hidden=True)
    for s, want in zip(seqs, slow):
        x = torch.as_tensor(s.astype(np.int64)).unsqueeze(0)
        got, hist, state = [], None, None
        for c in range(0, len(s) - 1, 37):
            inp, tgt = x[:, c:c + 37], x[:, c + 1:c + 38]
            logits, state, h = fw(inp[:, :tgt.shape[1]], state, None)
            lp = torch.log_softmax(logits[0], -1).gather(1, tgt[0, :, None])[:, 0]
            lp, hist = memory.with_cache(lp, logits[0], h[0], tgt[0], hist, mem, proposes)
            got.append(lp)
            assert (len(hist[0]) <= mem.size if isinstance(hist, tuple)
                    else len(hist.pitch) <= 2 * mem.size + memory.MOTIF + 1)  # bounded by size either way
        assert np.abs(torch.cat(got).numpy() - want).max() < 1e-5
    # whole files through the batched scorer, at widths that refill rows and split narrow batches
    for batch in (3, scoring.SPLIT_BELOW + 1):
        items = [scoring.Item(i, s) for i, s in enumerate(seqs)]
        got = {k: nats for k, nats, _ in scoring.score(fw, items, batch_size=batch, chunk=37, memory=mem,
                                                       proposes=proposes)}
        for i, want in enumerate(slow):
            assert abs(got[i] + want.sum()) / max(1, len(want)) < 1e-5, (batch, i)
    # and the cache changes the numbers (a cache that did nothing would pass the above at lam 0)
    plain = {k: nats for k, nats, _ in scoring.score(scoring.make_forward(strong_model), items, batch_size=3, chunk=37)}
    assert abs(plain[6] - got[6]) > 1.0


@pytest.mark.parametrize("kw,proposes", [(dict(theta=0.5, lam=0.4, size=20), None),
                                         (dict(theta=0.5, lam=0.4, size=20, gap=5), None),
                                         (dict(theta=0.5, lam=0.4, size=9, gap=2, events="notes"), slice(3, 12)),
                                         (dict(theta=0.5, lam=0.6, size=30, gap=4, events="notes", register=1.5),
                                          slice(3, 12)),
                                         (dict(lam=0.8, size=70, gap=4, events="notes", recall="motifs", register=2.0),
                                          slice(3, 12))])
def test_step_cache_equals_slow_reference(strong_model, kw, proposes, monkeypatch):
    """The sampler's buffers: primer pushed in chunks, then steps, against the slow formula."""
    monkeypatch.setattr(memory.StepCache, "SPARE_MIN", 3)  # so that the buffers compact often here
    mem = memory.Memory("cache", **kw)
    tokens = (motif_sequences()[2] if kw.get("recall") == "motifs" else sequences()[6])[:120].astype(np.int64)
    with torch.no_grad():
        logits, _, h = strong_model(torch.as_tensor(tokens).unsqueeze(0), None, return_hidden=True)
    cache = memory.StepCache(mem, 1, 16, strong_model.config.vocab_size, proposes=proposes)
    prefix = tokens[:40]
    from classical_music.generate.sampling import _next_events

    for s in range(0, 40, 16):  # as prime() feeds it
        cache.push_many(h[:, s:min(40, s + 16)], _next_events(prefix, s, min(40, s + 16) - s, 1, "cpu"))
    keys, nexts = [h[0, i].double() for i in range(119)], [int(x) for x in tokens[1:]]
    changed = 0
    for t in range(39, 119):  # long enough that the buffers compact more than once
        mixed = cache.mix(logits[:, t], h[:, t])
        want = torch.log(slow_mixture(torch.softmax(logits[0, t].double(), -1), h[0, t].double(), keys[:t],
                                      nexts[:t], mem, proposes))
        got = mixed[0].double()  # the logits themselves where the cache has nothing to say: equal up to a constant
        assert torch.allclose(got - torch.logsumexp(got, 0), want - torch.logsumexp(want, 0), atol=1e-5), t
        changed += not torch.allclose(want, torch.log_softmax(logits[0, t].double(), -1), atol=1e-3)
        cache.observe(torch.tensor([tokens[t + 1]]))
    assert changed >= 10  # the cache had something to say at many of the steps


def test_dynamic_evaluation_restores_weights_and_helps_a_repeating_piece(strong_model):
    piece = np.tile(sequences()[5][:30], 8)  # the same 30 events eight times
    other = sequences()[6]
    before = {k: v.clone() for k, v in strong_model.state_dict().items()}
    mem = memory.Memory("dynamic", lr=0.5, segment=16)
    alone = dynamic.file_nats(strong_model, piece, mem)
    assert all(torch.equal(before[k], v) for k, v in strong_model.state_dict().items())
    dynamic.file_nats(strong_model, other, mem)
    assert dynamic.file_nats(strong_model, piece, mem) == alone  # no file's steps carry into the next
    items = [scoring.Item(0, other), scoring.Item(1, piece)]
    got = {k: n for k, n, _ in dynamic.score(strong_model, items, mem)}
    assert got[1] == pytest.approx(alone, rel=1e-6)
    static = scoring.score(scoring.make_forward(strong_model), [scoring.Item(0, piece)], batch_size=1, chunk=64)
    assert alone < next(static)[1] - 10  # it learnt the repeats
    zero = dynamic.file_nats(strong_model, piece, memory.Memory("dynamic", lr=0.0, segment=16))
    assert zero == pytest.approx(next(scoring.score(scoring.make_forward(strong_model), [scoring.Item(0, piece)],
                                                    batch_size=1, chunk=64))[1], rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in strong_model.state_dict().items())


def test_a_flag_given_wins_over_the_block_values_it_contradicts():
    class M:  # a model with a block whose compose part recalls motifs
        checkpoint_config = {"memory": {"default": "cache", "lambda": 0.7, "size": 20000, "events": "notes",
                                        "recall": "motifs", "compose": {"lambda": 0.95, "size": 4000, "gap": 100,
                                                                        "register": 7}}}
    m = memory.composing(M, None)
    assert (m.mode, m.recall, m.events, m.gap, m.register, m.size) == ("cache", "motifs", "notes", 100, 7, 4000)
    m = memory.composing(M, None, events="all")  # no motifs or register without key-downs
    assert (m.recall, m.events, m.register, m.lam) == ("states", "all", 0.0, 0.95)
    assert memory.composing(M, None, size=100).gap == 50  # a size under the block's gap halves it
    assert memory.composing(M, None, size=100, gap=10).gap == 10
    with pytest.raises(UserError):  # what the user typed together still has to agree
        memory.composing(M, None, events="all", recall="motifs")
    assert memory.resolve(M, None).size == 20000  # evaluate reads the block itself


def test_memory_options_are_checked():
    for bad in ({"mode": "cache!"}, {"theta": -1.0}, {"lam": 1.5}, {"size": 0}, {"segment": 0}, {"lr": math.nan},
                {"gap": -1}, {"size": 100, "gap": 100}, {"events": "chords"}, {"register": -2.0},
                {"register": 7.0}):  # a register weight without events "notes"
        with pytest.raises(UserError):
            memory.Memory(**bad)


@pytest.fixture
def corpus(tmp_path, strong_model):
    src = tmp_path / "midi"
    rows = ["path,composer,piece,split"]
    for i in range(6):  # repeated phrases, so the cache has something to find
        write_midi(src / f"p{i}.mid", [n for k in range(4) for n in scale(12, start=k * 3.0, base=50 + i)])
        rows.append(f"p{i}.mid,x,piece{i},valid")
    (src / "metadata.csv").write_text("\n".join(rows) + "\n")
    ck = tmp_path / "ck"
    strong_model.save_pretrained(ck, tokenizer=strong_model.tokenizer)
    return src, ck


def evaluate(*argv):
    return cli.main(["evaluate", *map(str, argv), "--no_progress", "--threads", "1"])


def test_evaluate_memory_none_is_todays_output_and_cache_is_recorded(corpus, tmp_path):
    src, ck = corpus
    for name, extra in (("plain", []), ("none", ["--memory", "none"])):
        assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / f"{name}.json", *extra) == 0
    assert (tmp_path / "plain.json").read_bytes() == (tmp_path / "none.json").read_bytes()
    assert "memory" not in json.loads((tmp_path / "plain.json").read_text())
    args = ["--memory", "cache", "--memory_theta", "0.3", "--memory_lambda", "0.2", "--memory_size", "100"]
    assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / "c.json", *args) == 0
    r = json.loads((tmp_path / "c.json").read_text())
    assert r["memory"] == {"mode": "cache", "theta": 0.3, "lambda": 0.2, "size": 100}
    assert {f["memory"] for f in r["per_file"]} == {"cache"}
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert r["nats_per_event"] != plain["nats_per_event"]
    # two lanes (each its own forward and caches): the same numbers
    assert cli.main(["evaluate", str(src), "--checkpoint", str(ck), "--json", str(tmp_path / "c2.json"), *args,
                     "--no_progress", "--threads", "2"]) == 0
    assert json.loads((tmp_path / "c2.json").read_text())["nats_per_event"] == pytest.approx(r["nats_per_event"], abs=1e-4)
    # int8 scores the cache over its own hidden states: close to float32's
    assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / "i.json", "--precision", "int8", *args) == 0
    assert json.loads((tmp_path / "i.json").read_text())["nats_per_event"] == pytest.approx(r["nats_per_event"], abs=0.05)
    assert evaluate(src, "--checkpoint", ck, "--memory", "dynamic", "--precision", "int8") == 2
    # the motifs recall: recorded with its knobs, and it has something to say on repeated phrases
    motifs = args + ["--memory_events", "notes", "--memory_recall", "motifs", "--memory_gap", "5"]
    assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / "m.json", *motifs) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["memory"] | {"theta": 0} == {"mode": "cache", "theta": 0, "lambda": 0.2, "size": 100, "gap": 5,
                                          "events": "notes", "recall": "motifs", "register": 0.0}
    assert m["nats_per_event"] < plain["nats_per_event"]
    assert evaluate(src, "--checkpoint", ck, "--memory", "cache", "--memory_recall", "motifs") == 2  # needs notes


def test_tune_memory_writes_a_block_that_evaluate_uses(corpus, tmp_path, capsys):
    src, ck = corpus
    out = tmp_path / "t.json"
    assert cli.main(["tune-memory", str(src), "--checkpoint", str(ck), "--json", str(out), "--write",
                     "--default", "cache", "--no_progress", "--threads", "1"]) == 0
    r = json.loads(out.read_text())
    assert r["files"]["tune"] + r["files"]["held-out"] == r["files"]["all"] == 6
    assert r["cache"]["tune"] <= r["none"]["tune"] + 1e-9  # the grid holds lambda near 0
    block = json.loads((ck / "config.json").read_text())["memory"]
    assert block["default"] == "cache" and block["theta"] == r["chosen"]["theta"]
    assert ComposerLSTM.from_pretrained(ck).config.vocab_size == 391  # still a loadable checkpoint
    assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / "e.json") == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["memory"]["mode"] == "cache" and e["memory"]["lambda"] == r["chosen"]["lambda"]
    assert e["nats_per_event"] == pytest.approx(r["cache"]["all"], abs=2e-4)  # the grid's number, exactly scored
    assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / "n.json", "--memory", "none") == 0
    assert json.loads((tmp_path / "n.json").read_text())["nats_per_event"] == pytest.approx(r["none"]["all"], abs=2e-4)
    # the motifs recall: its grid's number is what evaluate scores with the block; a compose part stays,
    # and so does the block's default when --default is not given
    block["compose"] = {"default": "cache", "gap": 3}
    memory_tune.write_block(ck, block)
    assert cli.main(["tune-memory", str(src), "--checkpoint", str(ck), "--json", str(out), "--write", "--recall",
                     "motifs", "--no_progress", "--threads", "1"]) == 0
    r = json.loads(out.read_text())
    block = json.loads((ck / "config.json").read_text())["memory"]
    assert block["recall"] == r["chosen"]["recall"] == "motifs" and block["events"] == "notes"
    assert block["compose"] == {"default": "cache", "gap": 3} and block["default"] == "cache"
    assert r["cache"]["tune"] < r["none"]["tune"] - 0.01  # repeated scales: the motifs recall finds them
    assert evaluate(src, "--checkpoint", ck, "--json", tmp_path / "m.json") == 0
    assert json.loads((tmp_path / "m.json").read_text())["nats_per_event"] == pytest.approx(r["cache"]["all"], abs=2e-4)
    # a plain folder (no metadata.csv): all its files, each its own piece, without --split
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in src.glob("*.mid"):
        (plain / f.name).write_bytes(f.read_bytes())
    assert cli.main(["tune-memory", str(plain), "--checkpoint", str(ck), "--json", str(out), "--recall", "motifs",
                     "--no_progress", "--threads", "1"]) == 0
    assert json.loads(out.read_text())["files"]["all"] == 6


def test_generate_memory_none_is_byte_identical_and_cache_composes(corpus, tmp_path):
    src, ck = corpus

    def gen(name, *extra, checkpoint=ck):
        out = tmp_path / f"{name}.mid"
        assert cli.main(["generate", "--checkpoint", str(checkpoint), "--events", "300", "--seed", "4",
                         "--output", str(out), "--precision", "float32", *extra]) == 0
        return out.read_bytes()

    plain = gen("plain")
    assert gen("none", "--memory", "none") == plain
    cached = gen("cache", "--memory", "cache", "--memory_lambda", "0.5", "--memory_theta", "0.5")
    assert cached != plain
    primed = gen("primed", "--memory", "cache", "--memory_lambda", "0.5", "--primer_notes", "C4 E4 G4, F4 A4 C5",
                 "--top_p", "0.9", "--temperature", "0.9")
    assert primed != gen("primed0", "--primer_notes", "C4 E4 G4, F4 A4 C5", "--top_p", "0.9", "--temperature", "0.9")
    # a block whose default is cache: no flag composes with it, --memory none as before
    memory_tune.write_block(ck, memory.as_block(memory.Memory("cache", theta=0.5, lam=0.5, size=2000), "cache"))
    assert gen("default") == cached
    assert gen("none2", "--memory", "none") == plain
    # a `compose` part: composing takes it over the block (evaluate keeps the block's own values)
    notes = gen("notes", "--memory", "cache", "--memory_lambda", "0.5", "--memory_theta", "0.5", "--memory_gap", "20",
                "--memory_events", "notes", "--memory_register", "7")
    assert notes not in (plain, cached)
    block = memory.as_block(memory.Memory("cache", theta=0.5, lam=0.5, size=2000), "none")
    block["compose"] = {"default": "cache", "gap": 20, "events": "notes", "register": 7}
    memory_tune.write_block(ck, block)
    assert gen("composed") == notes
    assert gen("none3", "--memory", "none") == plain
    model = ComposerLSTM.from_pretrained(ck)
    assert memory.from_args(model, cli.build_parser().parse_args(["evaluate", str(src)])).mode == "none"
    with pytest.raises(SystemExit):  # composing has no dynamic evaluation
        cli.main(["generate", "--checkpoint", str(ck), "--memory", "dynamic", "--output", str(tmp_path / "x.mid")])


def test_studio_composes_with_the_memory_asked_and_refuses_others(corpus):
    pytest.importorskip("fastapi")
    import time

    from fastapi.testclient import TestClient

    from classical_music.web.server import create_app

    src, ck = corpus
    memory_tune.write_block(ck, memory.as_block(memory.Memory("cache", theta=0.5, lam=0.6, size=2000), "none"))
    with TestClient(create_app(ck, src.parent / "studio"), base_url="http://localhost") as client:
        assert client.get("/api/config").json()["memory"] == {"modes": ["none", "cache"], "default": "none"}
        assert client.post("/api/generate", json={"seconds": 2, "memory": "dynamic"}).status_code == 422
        pieces = {}
        for mode in ("none", "cache", None):
            body = {"seconds": 6, "seed": 5} | ({"memory": mode} if mode else {})
            job_id = client.post("/api/generate", json=body).json()["id"]
            for _ in range(600):
                job = client.get(f"/api/jobs/{job_id}").json()
                if job["status"] in ("done", "error"):
                    break
                time.sleep(0.05)
            assert job["status"] == "done", job
            pieces[mode] = client.get(job["files"]["midi"]).content
    assert pieces[None] == pieces["none"] != pieces["cache"]  # the default (no block) is none
