"""Aria-MIDI: download through the real huggingface_hub code against a fake hub on 127.0.0.1,
safe extraction against malicious archives, and the metadata filters."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from classical_music.data import aria
from classical_music.data.sources import assign_split
from classical_music.errors import UserError

from conftest import scale, write_midi

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = aria.ARIA_REPO_ID

METADATA = {
    "1": {"metadata": {"genre": "classical", "composer": "chopin", "music_period": "romantic", "form": "nocturne"},
          "audio_scores": {"0": 0.98, "1": 0.91}},
    "2": {"metadata": {"genre": "classical", "composer": "bach", "music_period": "baroque"},
          "audio_scores": {"0": 0.80}},
    "3": {"metadata": {"genre": "jazz", "performer": "evans"}, "audio_scores": {"0": 0.99, "1": 0.60}},
    "4": {"metadata": {"genre": "Classical", "composer": "Debussy", "period": "Impressionist"},
          "audio_scores": {"0": 0.95}},
    "5": {"metadata": {}, "audio_scores": {"0": 0.97}},
}
SEGMENTS = ["1_0", "1_1", "2_0", "3_0", "3_1", "4_0", "5_0"]


@pytest.fixture(scope="module")
def midi_bytes(tmp_path_factory):
    return write_midi(tmp_path_factory.mktemp("m") / "x.mid", scale(8)).read_bytes()


def _shard(stem: str) -> str:
    return "a" + "abcdefghij"[int(stem.split("_")[0]) % 10]


def make_archive(path: Path, midi: bytes, subset="pruned", with_metadata=True) -> bytes:
    """A tarball in the real layout: <stem>/metadata.json first, then <stem>/data/<xx>/<id>_<seg>.mid."""
    top = aria.archive_name(subset).removesuffix(".tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if with_metadata:
            add("metadata.json", json.dumps(METADATA).encode())
        for stem in SEGMENTS:
            add(f"data/{_shard(stem)}/{stem}.mid", midi)
    return path.read_bytes()


# ------------------------------------------------------------------------------------------
# A fake hub: /datasets/<repo>/resolve/<rev>/<file>, large files redirected to a "CDN" on another port


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}  # override, to serve a wrong checksum
        self.requests: list[tuple[str, str, str, dict]] = []  # (server, method, path, headers)
        self.lock = threading.Lock()

    def add(self, name, data):
        self.files[name] = data

    def count(self, server=None, method=None):
        return sum(1 for s, m, _, _ in self.requests if (server in (None, s)) and (method in (None, m)))


def _handler(hub: FakeHub, role: str, cdn_url: list):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, headers=(), body=b"", head=False):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _serve(self, head):
            with hub.lock:
                hub.requests.append((role, self.command, self.path, dict(self.headers)))
            if role == "cdn":
                return self._cdn(head)
            prefix = f"/datasets/{REPO}/resolve/"
            if not self.path.startswith(prefix):
                return self._send(404, [("X-Error-Code", "RepoNotFound")], head=head)
            rev, _, name = self.path[len(prefix):].partition("/")
            if rev not in ("main", COMMIT):
                return self._send(404, [("X-Error-Code", "RevisionNotFound")], head=head)
            if name not in hub.files:
                return self._send(404, [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", COMMIT)], head=head)
            data = hub.files[name]
            sha = hashlib.sha256(data).hexdigest()
            if name.endswith(".tar.gz"):  # LFS: the hub answers with a redirect carrying the real size/etag
                return self._send(302, [("Location", f"{cdn_url[0]}/blobs/{name}"), ("X-Repo-Commit", COMMIT),
                                        ("X-Linked-Etag", f'"{hub.etags.get(name, sha)}"'),
                                        ("X-Linked-Size", str(len(data))), ("ETag", '"git-pointer"')], head=head)
            # Small git file: served in place; its ETag is a git blob id, not a sha256.
            git_sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            self._send(200, [("X-Repo-Commit", COMMIT), ("ETag", f'"{git_sha}"')], data, head=head)

        def _cdn(self, head):
            name = self.path.removeprefix("/blobs/")
            data = hub.files.get(name)
            if data is None:
                return self._send(404, head=head)
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self._send(206, [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")], data[start:],
                           head=head)
            else:
                self._send(200, [], data, head=head)

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

    return Handler


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeHub()
    cdn_url: list = []
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake, role, cdn_url)) for role in ("hub", "cdn")]
    cdn_url.append(f"http://127.0.0.1:{servers[1].server_address[1]}")
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    fake.endpoint = f"http://127.0.0.1:{servers[0].server_address[1]}"
    yield fake
    for s in servers:
        s.shutdown()
        s.server_close()


def download(hub, dest, subset="pruned", **kw):
    return aria.download_aria_midi(subset, dest, endpoint=hub.endpoint, token=False, **kw)


# ------------------------------------------------------------------------------------------
# Download


def test_archive_names():
    assert aria.archive_name("pruned") == "aria-midi-v1-pruned-ext.tar.gz"
    assert aria.archive_name("deduped") == "aria-midi-v1-deduped-ext.tar.gz"
    assert aria.archive_name("unique") == "aria-midi-v1-unique-ext.tar.gz"
    assert aria.archive_name("full") == "aria-midi-v1-ext.tar.gz"
    with pytest.raises(UserError, match="unknown Aria-MIDI subset"):
        aria.archive_name("tiny")


def test_unknown_subset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="pruned, deduped, unique, full"):
        aria.download_aria_midi("everything", tmp_path / "d", endpoint="http://127.0.0.1:9")
    assert not (tmp_path / "d").exists()


def test_download_extract_roundtrip_then_noop(hub, tmp_path, midi_bytes):
    hub.add("aria-midi-v1-pruned-ext.tar.gz", make_archive(tmp_path / "a.tgz", midi_bytes))
    dest = tmp_path / "aria"
    root = aria.download_aria_midi("pruned", dest, endpoint=hub.endpoint, token="hf_secret")

    assert root == dest / "aria-midi-v1-pruned-ext"
    assert json.loads((root / "metadata.json").read_text()) == METADATA
    assert (root / "data" / "ab" / "1_0.mid").read_bytes() == midi_bytes
    assert sorted(p.stem for p in root.rglob("*.mid")) == sorted(SEGMENTS)
    assert not list(dest.glob(".*.extracting"))
    assert (dest / ".download" / "aria-midi-v1-pruned-ext.tar.gz").is_file()  # kept for re-runs
    assert aria.download_summary(dest, "pruned")["files"] == len(SEGMENTS) + 1
    # One HEAD to resolve, one GET to the CDN; the token goes to the hub, never to the CDN.
    assert (hub.count("hub", "HEAD"), hub.count("hub", "GET"), hub.count("cdn", "GET")) == (1, 0, 1)
    assert all("authorization" in {k.lower() for k in h} for s, _, _, h in hub.requests if s == "hub")
    assert not any("authorization" in {k.lower() for k in h} for s, _, _, h in hub.requests if s == "cdn")
    assert aria.is_aria_layout(dest) and aria.is_aria_layout(root)

    before = len(hub.requests)
    assert aria.download_aria_midi("pruned", dest, endpoint=hub.endpoint) == root
    assert len(hub.requests) == before  # marker: no network at all

    # Without the marker, the kept archive is checked (HEAD) but not fetched again.
    next(dest.glob(".aria-midi-v1-pruned-ext.tar.gz.done.json")).unlink()
    assert download(hub, dest) == root
    assert hub.count("cdn", "GET") == 1 and hub.count("hub", "HEAD") == 2


def test_interrupted_download_resumes(hub, tmp_path, midi_bytes):
    data = make_archive(tmp_path / "a.tgz", midi_bytes)
    hub.add("aria-midi-v1-pruned-ext.tar.gz", data)
    dest = tmp_path / "aria"
    part = dest / ".download" / f"aria-midi-v1-pruned-ext.tar.gz.{hashlib.sha256(data).hexdigest()[:16]}.part"
    part.parent.mkdir(parents=True)
    half = len(data) // 2
    part.write_bytes(data[:half])  # what a killed earlier run leaves behind

    root = download(hub, dest)
    gets = [h for s, m, _, h in hub.requests if s == "cdn" and m == "GET"]
    assert len(gets) == 1 and gets[0].get("Range") == f"bytes={half}-"
    assert (dest / ".download" / "aria-midi-v1-pruned-ext.tar.gz").read_bytes() == data
    assert not part.exists()
    assert len(list(aria.iter_aria(root))) == len(SEGMENTS)


def test_checksum_mismatch_deletes_the_download(hub, tmp_path, midi_bytes):
    hub.add("aria-midi-v1-pruned-ext.tar.gz", make_archive(tmp_path / "a.tgz", midi_bytes))
    hub.etags["aria-midi-v1-pruned-ext.tar.gz"] = "f" * 64
    dest = tmp_path / "aria"
    with pytest.raises(UserError, match="checksum mismatch"):
        download(hub, dest)
    assert not list((dest / ".download").glob("*.part"))
    assert not (dest / "aria-midi-v1-pruned-ext").exists()


def test_corrupt_archive_is_a_user_error(hub, tmp_path):
    hub.add("aria-midi-v1-deduped-ext.tar.gz", b"\x1f\x8b\x08\x00" + b"not really gzip" * 100)
    dest = tmp_path / "aria"
    with pytest.raises(UserError, match="corrupt"):
        download(hub, dest, subset="deduped")
    assert sorted(p.name for p in dest.iterdir()) == [".download"]


def test_metadata_beside_the_archive(hub, tmp_path, midi_bytes):
    hub.add("aria-midi-v1-ext.tar.gz", make_archive(tmp_path / "a.tgz", midi_bytes, "full", with_metadata=False))
    hub.add("metadata.json", json.dumps(METADATA).encode())
    root = download(hub, tmp_path / "aria", subset="full")
    assert root == tmp_path / "aria" / "aria-midi-v1-ext"
    assert json.loads((root / "metadata.json").read_text()) == METADATA
    assert {sf.meta["file_id"] for sf in aria.iter_aria(tmp_path / "aria", genre=["jazz"])} == {"3"}


def test_no_metadata_anywhere(hub, tmp_path, midi_bytes):
    hub.add("aria-midi-v1-unique-ext.tar.gz", make_archive(tmp_path / "a.tgz", midi_bytes, "unique", False))
    with pytest.raises(UserError, match="has no metadata.json"):
        download(hub, tmp_path / "aria", subset="unique")
    assert not (tmp_path / "aria" / "aria-midi-v1-unique-ext").exists()


def test_missing_file_and_revision_are_user_errors(hub, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        download(hub, tmp_path / "a")
    with pytest.raises(UserError, match="no such revision"):
        download(hub, tmp_path / "a", revision="v9")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(UserError, match="could not reach .*offline"):
        aria.download_aria_midi("pruned", tmp_path / "a", endpoint=f"http://127.0.0.1:{_closed_port()}", token=False)
    assert not (tmp_path / "a").exists()


def test_offline_rerun_unpacks_the_kept_archive(hub, tmp_path, midi_bytes):
    hub.add("aria-midi-v1-pruned-ext.tar.gz", make_archive(tmp_path / "a.tgz", midi_bytes))
    dest = tmp_path / "aria"
    root = download(hub, dest)
    next(dest.glob(".*.done.json")).unlink()
    (root / "data" / "ab" / "1_0.mid").unlink()
    dead = f"http://127.0.0.1:{_closed_port()}"
    assert aria.download_aria_midi("pruned", dest, endpoint=dead, token=False) == root
    assert (root / "data" / "ab" / "1_0.mid").is_file()


def test_unsafe_archive_from_the_hub_leaves_nothing_behind(hub, tmp_path):
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        ok = tarfile.TarInfo("aria-midi-v1-pruned-ext/metadata.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        evil = tarfile.TarInfo("aria-midi-v1-pruned-ext/../../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    hub.add("aria-midi-v1-pruned-ext.tar.gz", bad.read_bytes())
    dest = tmp_path / "x" / "aria"
    with pytest.raises(UserError, match="unsafe archive member"):
        download(hub, dest)
    assert sorted(p.name for p in dest.iterdir()) == [".download"]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["aria"]


def test_cli_download_prints_a_summary(hub, tmp_path, midi_bytes, capsys):
    hub.add("aria-midi-v1-deduped-ext.tar.gz", make_archive(tmp_path / "a.tgz", midi_bytes, "deduped"))
    parser = argparse.ArgumentParser()
    aria.add_download_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["download", "aria-midi", "--subset", "deduped", "--dest", str(tmp_path / "d"),
                              "--endpoint", hub.endpoint])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and f"{len(SEGMENTS) + 1} files" in out and "aria-midi-v1-deduped-ext" in out
    defaults = parser.parse_args(["download", "aria-midi"])
    assert (defaults.subset, defaults.dest, defaults.revision) == ("pruned", Path("data/aria-midi"), None)
    with pytest.raises(SystemExit):
        parser.parse_args(["download", "maestro"])


# ------------------------------------------------------------------------------------------
# Safe extraction, called directly with hostile archives


def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name, kind=tarfile.CHRTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _cve_2025_4517(out):
    """The published construction: 16 nested 247-character folders, each reachable through a
    one-letter link, a ``../`` x 16 link at the bottom (its real path is past PATH_MAX, where
    realpath stops resolving), a link through it to the parent of the destination, and a file
    written through that."""
    comp, steps, path, members = "d" * 247, "abcdefghijklmnop", "", []
    for letter in steps:
        members += [_dir(f"{path}{comp}"), _link(f"{path}{letter}", comp)]
        path += comp + "/"
    linkpath = "/".join(steps) + "/" + "l" * 254
    members += [_link(linkpath, "../" * len(steps)), _link("escape", linkpath + "/.."),
                _file("escape/evil.txt")]
    return members


def _snapshot(base: Path, skip: Path) -> set[str]:
    return {str(p) for p in base.rglob("*") if skip not in p.parents and p != skip}


HOSTILE = {
    "dotdot": lambda out: [_file("ok.txt"), _file("../evil.txt")],
    "dotdot_nested": lambda out: [_file("a/../../evil.txt")],
    "absolute": lambda out: [_file(str(out / "abs_evil.txt"))],
    "drive_letter": lambda out: [_file("C:/evil.txt")],
    "backslash": lambda out: [_file("..\\evil.txt")],
    "symlink_to_etc": lambda out: [_link("etc", "/etc"), _file("etc/evil.txt")],
    "symlink_relative_out": lambda out: [_link("up", "../..")],
    "symlink_harmless_looking": lambda out: [_file("a/b.txt"), _link("a/c.txt", "b.txt")],
    "symlink_chain": lambda out: [_file("d/keep.txt"), _link("d/self", ".."), _link("d/self/d/esc", "../..")],
    # a link checked before the links it goes through exist: s -> r/r/../victim.txt (inside while
    # r is missing), then r -> . makes it point out, then a file written through s
    "symlink_checked_too_early": lambda out: [_link("s", "r/r/../victim.txt"), _link("r", "."),
                                              _file("s", b"overwritten")],
    "symlink_checked_too_early_etc": lambda out: [_link("s", "r/r/r/../../../../etc/hostname"), _link("r", ".")],
    "cve_2025_4517": _cve_2025_4517,
    "hardlink_outside": lambda out: [_link("h", str(out / "victim.txt"), tarfile.LNKTYPE)],
    "hardlink_dotdot": lambda out: [_link("h", "../victim.txt", tarfile.LNKTYPE)],
    "hardlink_through_cve_links": lambda out: _cve_2025_4517(out)[:-1] + [
        _link("h", "escape/victim.txt", tarfile.LNKTYPE), _file("h", b"overwritten")],
    "hardlink_inside": lambda out: [_file("a.txt"), _link("h", "a.txt", tarfile.LNKTYPE)],
    "char_device": lambda out: [_special("null")],
    "block_device": lambda out: [_special("sda", tarfile.BLKTYPE)],
    "fifo": lambda out: [_special("pipe", tarfile.FIFOTYPE)],
    "long_name": lambda out: [_file("x" * 256)],
    "long_path": lambda out: [_file("/".join(["d" * 200] * 6))],
    "deep_path": lambda out: [_file("d/" * 40 + "x")],
    "duplicate_file": lambda out: [_file("a.txt", b"first"), _file("a.txt", b"second")],
    "file_then_folder": lambda out: [_file("x"), _file("x/y")],
    "folder_then_file": lambda out: [_dir("x"), _file("x")],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_safe_extract_rejects_hostile_members(tmp_path, kind):
    out = tmp_path / "outside"
    dest = out / "dest"
    dest.mkdir(parents=True)
    (out / "victim.txt").write_text("keep me")
    archive = _tar(tmp_path / f"{kind}.tgz", HOSTILE[kind](out))
    before = _snapshot(tmp_path, dest)
    with pytest.raises(UserError, match="unsafe archive member") as e:
        aria.safe_extract(archive, dest)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    assert _snapshot(tmp_path, dest) == before
    assert (out / "victim.txt").read_text() == "keep me"
    for p in dest.rglob("*"):  # whatever did land stays inside, and is a plain folder or file
        assert not p.is_symlink() and (p.is_dir() or p.is_file())
        assert os.path.realpath(p).startswith(str(dest.resolve()))


def test_safe_extract_does_not_follow_a_link_already_in_dest(tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "data").symlink_to(outside)  # planted before extraction
    archive = _tar(tmp_path / "a.tgz", [_file("data/x.mid", b"MThd")])
    with pytest.raises(UserError, match="unsafe archive member"):
        aria.safe_extract(archive, dest)
    assert list(outside.iterdir()) == []


def test_safe_extract_writes_folders_and_files(tmp_path):
    mode_bits = tarfile.TarInfo("a/run.sh")
    mode_bits.size, mode_bits.mode = 2, 0o4777  # set-uid and world-writable are not kept
    archive = _tar(tmp_path / "ok.tgz", [_dir("./top"), _file("./top/a/b.txt", b"hi"), _file("top/c.bin", b""),
                                         (mode_bits, b"#!"), _dir("top/a")])
    dest = tmp_path / "dest"
    assert aria.safe_extract(archive, dest) == 3
    assert (dest / "top" / "a" / "b.txt").read_text() == "hi"
    assert (dest / "top" / "c.bin").read_bytes() == b""
    assert (dest / "a" / "run.sh").stat().st_mode & 0o7777 == 0o644
    # plain tar (not gzip) is read too
    plain = tmp_path / "ok.tar"
    with tarfile.open(plain, "w") as tar:
        info, data = _file("p.txt", b"plain")
        tar.addfile(info, io.BytesIO(data))
    assert aria.safe_extract(plain, tmp_path / "dest2") == 1


def test_safe_extract_truncated_archive_leaves_no_half_file(tmp_path):
    big = os.urandom(200_000)
    archive = _tar(tmp_path / "t.tar.gz", [_file("big.bin", big)])
    raw = tarfile.open(archive).extractfile("big.bin").read()
    assert raw == big
    cut = tmp_path / "cut.tar"
    with tarfile.open(cut, "w") as tar:
        info, data = _file("big.bin", big)
        tar.addfile(info, io.BytesIO(data))
    cut.write_bytes(cut.read_bytes()[:100_000])
    with pytest.raises(UserError, match="corrupt"):
        aria.safe_extract(cut, tmp_path / "dest")
    assert not (tmp_path / "dest" / "big.bin").exists()


@pytest.mark.parametrize("kind", ["duplicate_file", "file_then_folder", "hardlink_inside", "cve_2025_4517"])
def test_cli_download_of_a_hostile_archive_is_one_line(hub, tmp_path, capsys, kind):
    top = "aria-midi-v1-pruned-ext/"
    members = [(_file(top + "metadata.json", json.dumps(METADATA).encode()))]
    for info, data in HOSTILE[kind](tmp_path):
        info.name = top + info.name
        members.append((info, data))
    hub.add("aria-midi-v1-pruned-ext.tar.gz", _tar(tmp_path / "bad.tgz", members).read_bytes())
    dest = tmp_path / "x" / "aria"
    parser = argparse.ArgumentParser()
    aria.add_download_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["download", "aria-midi", "--dest", str(dest), "--endpoint", hub.endpoint])
    from classical_music.cli import run
    assert run(args.func, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unsafe archive member") and "\n" not in err
    assert sorted(p.name for p in dest.iterdir()) == [".download"]  # the staging folder is gone


def test_safe_extract_rejects_garbage(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"definitely not a tarball" * 50)
    with pytest.raises(UserError, match="corrupt"):
        aria.safe_extract(tmp_path / "junk.tar.gz", tmp_path / "dest")


# ------------------------------------------------------------------------------------------
# Reading a tree: layout detection, filters, splits


@pytest.fixture
def tree(tmp_path, midi_bytes):
    """An unpacked download: dest/aria-midi-v1-pruned-ext/{metadata.json, data/xx/<id>_<seg>.mid}."""
    root = tmp_path / "aria" / "aria-midi-v1-pruned-ext"
    (root / "data").mkdir(parents=True)
    (root / "metadata.json").write_text(json.dumps(METADATA))
    for stem in SEGMENTS + ["9_0"]:  # 9 has no metadata at all
        p = root / "data" / _shard(stem) / f"{stem}.mid"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(midi_bytes)
    return tmp_path / "aria"


def ids(files):
    return sorted(f"{sf.meta['file_id']}_{sf.meta['segment']}" for sf in files)


def test_layout_detection(tree, tmp_path, midi_dir):
    assert aria.is_aria_layout(tree)
    assert aria.is_aria_layout(tree / "aria-midi-v1-pruned-ext")
    assert not aria.is_aria_layout(midi_dir)
    assert not aria.is_aria_layout(tree / "aria-midi-v1-pruned-ext" / "metadata.json")  # a file
    other = tmp_path / "other"
    other.mkdir()
    (other / "metadata.json").write_text(json.dumps({"pieces": [1, 2]}))
    (other / "1_0.mid").write_bytes(b"")
    assert not aria.is_aria_layout(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.json").write_text(json.dumps(METADATA))
    assert not aria.is_aria_layout(empty)  # metadata but no MIDI files
    with pytest.raises(UserError, match="not an Aria-MIDI folder"):
        list(aria.iter_aria(midi_dir))


def test_iter_without_filters_yields_everything_with_meta(tree):
    files = list(aria.iter_aria(tree))
    assert ids(files) == sorted(SEGMENTS + ["9_0"])
    sf = next(f for f in files if f.path.name == "1_1.mid")
    assert sf.meta == {"genre": "classical", "composer": "chopin", "music_period": "romantic", "form": "nocturne",
                       "file_id": "1", "segment": 1, "audio_score": 0.91}
    assert next(f for f in files if f.path.name == "9_0.mid").meta == {"file_id": "9", "segment": 0,
                                                                      "audio_score": None}


def test_filters_case_insensitive_or_within_and_across(tree):
    assert ids(aria.iter_aria(tree, genre=["CLASSICAL"])) == ["1_0", "1_1", "2_0", "4_0"]
    assert ids(aria.iter_aria(tree, genre=["jazz", "Classical"])) == ["1_0", "1_1", "2_0", "3_0", "3_1", "4_0"]
    assert ids(aria.iter_aria(tree, composer=["Chopin", "debussy"])) == ["1_0", "1_1", "4_0"]
    assert ids(aria.iter_aria(tree, genre=["classical"], composer=["bach"])) == ["2_0"]
    assert ids(aria.iter_aria(tree, genre=["jazz"], composer=["bach"])) == []
    # music_period (Aria's key) and period both count.
    assert ids(aria.iter_aria(tree, period=["romantic", "impressionist"])) == ["1_0", "1_1", "4_0"]
    assert ids(aria.iter_aria(tree, genre="jazz")) == ["3_0", "3_1"]  # a bare string is one value


def test_min_audio_score_is_per_segment(tree):
    assert ids(aria.iter_aria(tree, min_audio_score=0.95)) == ["1_0", "3_0", "4_0", "5_0"]
    assert ids(aria.iter_aria(tree, genre=["jazz"], min_audio_score=0.9)) == ["3_0"]
    assert ids(aria.iter_aria(tree, min_audio_score=0)) == sorted(SEGMENTS)  # 9_0 has no score


def test_segments_of_one_recording_share_a_split(tmp_path, midi_bytes):
    root = tmp_path / "big"
    meta = {str(i): {"metadata": {"genre": "classical"}, "audio_scores": {str(s): 0.9 for s in range(4)}}
            for i in range(300)}
    (root / "data" / "aa").mkdir(parents=True)
    (root / "metadata.json").write_text(json.dumps(meta))
    for i in range(300):
        for s in range(4):
            (root / "data" / "aa" / f"{i}_{s}.mid").write_bytes(midi_bytes)
    by_id: dict[str, set] = {}
    for sf in aria.iter_aria(root):
        assert sf.group == sf.meta["file_id"] and sf.split == assign_split(sf.meta["file_id"])
        by_id.setdefault(sf.group, set()).add(sf.split)
    assert len(by_id) == 300 and all(len(s) == 1 for s in by_id.values())
    assert {s for v in by_id.values() for s in v} == {"train", "valid"}


def test_two_subsets_side_by_side_do_not_double_count(tree, midi_bytes):
    other = tree / "aria-midi-v1-deduped-ext"
    (other / "data" / "ab").mkdir(parents=True)
    (other / "metadata.json").write_text(json.dumps(METADATA))
    (other / "data" / "ab" / "1_0.mid").write_bytes(midi_bytes)
    assert ids(aria.iter_aria(tree)) == sorted(SEGMENTS + ["9_0"])


# ------------------------------------------------------------------------------------------
# Issue 27, item 5: a download never removes what it did not create; sparse and huge members


def test_download_never_removes_a_folder_it_did_not_create(hub, tmp_path, midi_bytes, capsys):
    top = "mywork"  # an archive whose top folder has the name of the user's own folder
    members = [_file(f"{top}/metadata.json", json.dumps(METADATA).encode()), _file(f"{top}/data/ab/1_0.mid", midi_bytes)]
    hub.add("aria-midi-v1-pruned-ext.tar.gz", _tar(tmp_path / "m.tgz", members).read_bytes())
    dest = tmp_path / "dest"
    (dest / top).mkdir(parents=True)
    (dest / top / "thesis.txt").write_text("four years of work")
    parser = argparse.ArgumentParser()
    aria.add_download_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["download", "aria-midi", "--dest", str(dest), "--endpoint", hub.endpoint])
    from classical_music.cli import run
    assert run(args.func, args) == 2
    err = capsys.readouterr().err.strip()
    assert "mywork already exists and was not made by `data download`" in err and "\n" not in err
    assert (dest / top / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in dest.iterdir()) == [".download", top]  # no staging left, nothing added
    # once the user's folder is moved away, the same download unpacks; re-running it (even with
    # its marker lost) replaces only what it made itself
    (dest / top).rename(tmp_path / "moved")
    root = download(hub, dest)
    assert root == dest / top and (root / "data" / "ab" / "1_0.mid").read_bytes() == midi_bytes
    next(dest.glob(".*.done.json")).unlink()
    assert download(hub, dest) == root


def _sparse(name: str) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE  # a GNU sparse member: its holes would be written out in full
    info.size = 235
    return info, bytes(235)


@pytest.mark.parametrize("kind", ["sparse", "over_16_mb"])
def test_safe_extract_refuses_sparse_and_oversized_members(tmp_path, kind):
    if kind == "sparse":
        members = [_sparse("top/x.mid")]
    else:
        members = [_file("top/small.mid", b"MThd"), _file("top/big.mid", bytes(16 * 2**20 + 1))]
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(archive) as tar:  # the archive really holds what the test says
        assert any(m.issparse() for m in tar) == (kind == "sparse")
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match="sparse file" if kind == "sparse" else "over the 16 MB") as e:
        aria.safe_extract(archive, dest)
    assert "\n" not in str(e.value)
    assert not list(dest.rglob("*.mid")) or kind != "sparse"
    assert not (dest / "top" / "big.mid").exists() and not (dest / "top" / "x.mid").exists()
