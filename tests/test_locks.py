"""One run per output folder (issue 27, item 4): a second `data prepare` into the same --out, or
`train` into the same --save_dir, exits 2 naming the first; a dead holder never blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from classical_music import cli
from classical_music.locks import FolderBusy, folder_lock

from conftest import scale, write_midi

HOLD = """
import sys, time
from classical_music.locks import folder_lock
with folder_lock(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding a folder's lock, as a first run would."""
    procs = []

    def hold(folder):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "--first-run"], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def test_a_second_prepare_or_train_into_a_held_folder_exits_2_naming_the_first(tmp_path, capsys, holder):
    src = tmp_path / "src"
    write_midi(src / "a.mid", scale(8))
    out = tmp_path / "cache"
    first = holder(out)
    assert cli.main(["data", "prepare", str(src), "--out", str(out), "--workers", "1", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"pid {first.pid}" in err and "--first-run" in err  # who holds it, and with what command
    assert not (out / "index.npz").exists()  # nothing written beside the first run
    run = tmp_path / "run"
    second = holder(run)
    assert cli.main(["train", "--data", str(out), "--save_dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run} is in use by pid {second.pid}" in err and "Traceback" not in err
    # once the first run is gone, its lock file (left by kill -9) blocks nobody
    first.kill()
    first.wait()
    assert (out / ".lock").exists()
    assert cli.main(["data", "prepare", str(src), "--out", str(out), "--workers", "1", "--no_progress"]) == 0
    assert (out / "index.npz").exists() and not (out / ".lock").exists()


def test_the_lock_is_released_and_a_failed_run_leaves_no_folder(tmp_path):
    folder = tmp_path / "new"
    with folder_lock(folder, "test") as path:
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid()
        with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):  # a separate open file: flock says busy
            with folder_lock(folder, "test"):
                pass
    assert not folder.exists()  # created for a run that wrote nothing
    t0 = time.perf_counter()
    with folder_lock(folder, "test"):
        (folder / "x").write_text("kept")
    assert (folder / "x").exists() and time.perf_counter() - t0 < 1
