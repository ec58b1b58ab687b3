"""Atomic writes: the target appears whole or not at all."""

import pytest

from classical_music.files import atomic_path, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_successful_write_replaces_the_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.")
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_leftovers_of_killed_writes_are_swept_once_stale(tmp_path):
    import os
    import time

    from classical_music import files

    target = tmp_path / "cache.json"
    stale, fresh = tmp_path / ".cache.json.dead0001.tmp", tmp_path / ".cache.json.live0002.tmp"
    for p in (stale, fresh):
        p.write_text("{half")
    old = time.time() - files.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    write_json(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.json.live0002.tmp", "cache.json"]


def test_staged_files_land_together_or_not_at_all(tmp_path):
    from classical_music.files import staged_paths

    (tmp_path / "a.mid").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_paths() as stage:
            stage(tmp_path / "a.mid").write_text("new")
            wav = stage(tmp_path / "a.wav")
            assert wav.suffix == ".wav" and wav.name.startswith(".a.wav.")  # writers may go by the suffix
            wav.write_text("half")
            raise RuntimeError("the second file failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mid"] and (tmp_path / "a.mid").read_text() == "old"
    with staged_paths() as stage:
        stage(tmp_path / "a.mid").write_text("new")
        stage(tmp_path / "a.wav").write_text("wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mid", "a.wav"]
    assert (tmp_path / "a.mid").read_text() == "new"
