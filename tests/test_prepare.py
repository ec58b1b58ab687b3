import json
import os

import numpy as np

from classical_music import cli
from classical_music.data.cache import Cache
from classical_music.data.prepare import PrepareConfig, prepare

from conftest import scale, write_midi


def run_cli(*argv):
    return cli.main(["data", "prepare", *map(str, argv), "--no_progress"])


def make_bad_corpus(root):
    good = [write_midi(root / f"good{i}.mid", scale(20, base=50 + i)) for i in range(3)]
    (root / "random.mid").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "empty.mid").write_bytes(b"")
    (root / "text.mid").write_text("this is not a MIDI file\n" * 20)
    data = good[0].read_bytes()
    (root / "truncated.mid").write_bytes(data[: len(data) // 2])
    (root / "header_only.mid").write_bytes(data[:14])
    write_midi(root / "no_notes.mid", [])
    write_midi(root / "drums.mid", scale(10), drum=True)
    os.symlink(root / "does-not-exist.mid", root / "dangling.mid")
    # absurd but valid: one note held for three hours, 10,000 notes at one instant
    write_midi(root / "hours.mid", [(60, 0.0, 3 * 3600.0, 80), (62, 1.0, 0.5, 80)])
    write_midi(root / "cluster.mid", [(21 + i % 88, 0.0, 1.0, 90) for i in range(10_000)])
    (root / "huge.mid").write_bytes(b"MThd" + b"\0" * (20 * 2**20))
    return good


def test_bad_files_are_skipped_with_reasons_and_good_ones_prepared(tmp_path, capsys):
    src = tmp_path / "src"
    make_bad_corpus(src)
    report = tmp_path / "report.json"
    assert run_cli(src, "--out", tmp_path / "cache", "--workers", 2, "--report", report) == 0
    r = json.loads(report.read_text())
    assert set(r) >= {"prepared", "skipped", "events", "seconds"}
    assert r["prepared"] == 5  # 3 good + the clipped long note + the clipped cluster
    reasons = {os.path.basename(s["path"]): s["reason"] for s in r["skipped"]}
    assert set(reasons) == {"random.mid", "empty.mid", "text.mid", "truncated.mid", "header_only.mid",
                            "no_notes.mid", "drums.mid", "dangling.mid", "huge.mid"}
    assert reasons["empty.mid"] == "empty file"
    assert reasons["drums.mid"] == "drum tracks only"
    assert reasons["no_notes.mid"] == "no notes"
    assert "unreadable" in reasons["dangling.mid"]
    assert "too large" in reasons["huge.mid"]
    assert "not a MIDI" in reasons["text.mid"]
    assert r["events"] > 0 and isinstance(r["seconds"], float)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "prepared 5 files" in out[0] and "skipped 9" in out[0]

    cache = Cache(tmp_path / "cache")
    assert len(cache.length) == 5
    lines = [json.loads(x) for x in (tmp_path / "cache" / "manifest.jsonl").read_text().splitlines()]
    rec = {x["key"]: x for x in lines}
    assert rec["hours.mid"]["music_seconds"] <= 31  # the hours-long note is clipped
    assert rec["cluster.mid"]["length"] < 300  # at most 88 keys go down at one instant


def test_rerun_is_incremental(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_midi(src / f"a{i}.mid", scale(12, base=60 + i))
    out = tmp_path / "cache"
    r1 = prepare(PrepareConfig(source=src, out=out, progress=False))
    assert r1["prepared"] == 4
    r2 = prepare(PrepareConfig(source=src, out=out, progress=False))
    assert r2["prepared"] == 0 and r2["already_prepared"] == 4
    write_midi(src / "new.mid", scale(12, base=40))
    r3 = prepare(PrepareConfig(source=src, out=out, progress=False))
    assert r3["prepared"] == 1 and r3["cache"]["files"] == 5
    cache = Cache(out)
    tok = cache.tokenizer
    # every file's events are intact and framed after three runs appending to one shard
    for i in range(5):
        t = cache.tokens(i)
        assert t[0] == tok.bos_id and t[-1] == tok.eos_id


def test_crash_leftovers_are_cut_on_resume(tmp_path):
    src = tmp_path / "src"
    write_midi(src / "a.mid", scale(12))
    out = tmp_path / "cache"
    prepare(PrepareConfig(source=src, out=out, progress=False))
    shard = out / "shards" / "tokens-00000.bin"
    size = shard.stat().st_size
    with open(shard, "ab") as f:  # tokens written, manifest line never made it
        f.write(b"\x05\x00" * 50)
    write_midi(src / "b.mid", scale(12, base=40))
    prepare(PrepareConfig(source=src, out=out, progress=False))
    cache = Cache(out)
    assert shard.stat().st_size == size + 2 * int(cache.length[1])
    assert cache.tokens(1)[0] == cache.tokenizer.bos_id


def test_metadata_csv_columns_and_split_travel(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_midi(src / "Bach" / f"p{i}.mid", scale(12, base=60 + i))
    (src / "metadata.csv").write_text(
        "path,composer,title,piece,split\n"
        + "".join(f"Bach/p{i}.mid,Bach,Title {i},piece{i // 2},{'valid' if i >= 2 else 'train'}\n" for i in range(4))
    )
    out = tmp_path / "cache"
    r = prepare(PrepareConfig(source=src, out=out, progress=False))
    assert r["cache"]["splits"]["train"]["files"] == 2 and r["cache"]["splits"]["valid"]["files"] == 2
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {x["meta"]["composer"] for x in recs} == {"Bach"}
    assert {x["group"] for x in recs} == {"piece0", "piece1"}
    assert json.loads((out / "tokenizer.json").read_text())["name"] == "performance"


def test_remi_cache_and_tokenizer_mismatch(tmp_path, midi_dir, capsys):
    out = tmp_path / "cache"
    assert run_cli(midi_dir, "--out", out, "--tokenizer", "remi", "--workers", 1) == 0
    assert Cache(out).tokenizer.name == "remi"
    capsys.readouterr()
    assert run_cli(midi_dir, "--out", out, "--tokenizer", "performance") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "remi" in err[0]


def test_missing_source_is_exit_2(tmp_path, capsys):
    assert run_cli(tmp_path / "nowhere", "--out", tmp_path / "c") == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_workers_give_the_same_cache(tmp_path, midi_dir):
    a = prepare(PrepareConfig(source=midi_dir, out=tmp_path / "a", workers=1, progress=False))
    b = prepare(PrepareConfig(source=midi_dir, out=tmp_path / "b", workers=2, progress=False))
    assert a["events"] == b["events"]
    ca, cb = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    ta = sorted(ca.tokens(i).tobytes() for i in range(len(ca.length)))
    tb = sorted(cb.tokens(i).tobytes() for i in range(len(cb.length)))
    assert ta == tb


def test_shared_corpus_sample(shared_corpus, tmp_path):
    r = prepare(PrepareConfig(source=shared_corpus, out=tmp_path / "c", workers=2, progress=False, limit=40))
    assert r["prepared"] == 40 and not r["skipped"]
    assert r["events"] > 40 * 1000


def test_files_deleted_from_the_source_leave_the_index(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "cache"
    for i in range(4):
        write_midi(src / "sub" / f"p{i}.mid", scale(20, base=50 + i))
    (src / "bad.mid").write_bytes(b"not midi")
    assert run_cli(src, "--out", out, "--workers", 1) == 0
    assert len(Cache(out).length) == 4
    capsys.readouterr()
    (src / "sub" / "p1.mid").unlink()
    (src / "sub" / "p3.mid").unlink()
    (src / "bad.mid").unlink()
    report = tmp_path / "r.json"
    assert run_cli(src, "--out", out, "--workers", 1, "--report", report) == 0
    assert "dropped 2 no longer in" in capsys.readouterr().out
    r = json.loads(report.read_text())
    assert r["dropped"] == 2 and r["prepared"] == 0 and r["already_prepared"] == 2
    cache = Cache(out)
    assert len(cache.length) == 2
    stats = json.loads((out / "cache.json").read_text())
    assert stats["files"] == 2 and stats["skipped"] == 0
    # a file put back is prepared again; nothing is dropped twice
    write_midi(src / "sub" / "p1.mid", scale(20, base=51))
    assert run_cli(src, "--out", out, "--workers", 1, "--report", report) == 0
    r = json.loads(report.read_text())
    assert (r["prepared"], r["dropped"], len(Cache(out).length)) == (1, 0, 3)
    # another folder prepared into the same cache does not drop this one's files
    write_midi(tmp_path / "other" / "q.mid", scale(20))
    assert run_cli(tmp_path / "other", "--out", out, "--workers", 1, "--report", report) == 0
    r = json.loads(report.read_text())
    assert (r["prepared"], r["dropped"], len(Cache(out).length)) == (1, 0, 4)


def test_a_folder_without_midi_files_is_exit_2_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("no music here")
    (src / "song.wav").write_bytes(b"RIFF")
    out = tmp_path / "cache"
    assert run_cli(src, "--out", out, "--report", tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert f"no MIDI files (.mid, .midi) in {src}" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "r.json").exists()
    write_midi(src / "a.mid", scale(20))
    assert run_cli(src, "--out", out, "--composer", "nobody") == 2
    assert "match the filters" in capsys.readouterr().err and not out.exists()
