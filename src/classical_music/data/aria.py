"""Aria-MIDI: download and safely unpack it from the Hugging Face Hub, then read it as a source.

Layout (github.com/loubbrad/aria-midi README and the hub dataset card ``loubb/aria-midi``): one
tarball per subset, ``aria-midi-v1-<subset>-ext.tar.gz`` (the full set: ``aria-midi-v1-ext.tar.gz``),
holding ``<archive stem>/metadata.json`` and ``<archive stem>/data/<2 letters>/<file_id>_<segment>.mid``.
metadata.json maps each file_id to ``{"metadata": {category: value}, "audio_scores": {segment: score}}``;
categories include genre, composer, performer, music_period, form, difficulty, opus, piece_number.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urljoin, urlsplit

from ..conditions import filter_form
from ..errors import UserError
from ..files import file_digest, write_json
from .extract import safe_extract  # noqa: F401  (aria.safe_extract is public)
from .sources import SourceFile, assign_split

ARIA_REPO_ID = "loubb/aria-midi"
SUBSETS = ("pruned", "deduped", "unique", "full")
METADATA_NAME = "metadata.json"
DATASETS = ("aria-midi",)

_MIDI_NAME = re.compile(r"^(?P<id>.+)_(?P<seg>\d+)\.midi?$", re.IGNORECASE)
# Enough to tell an Aria metadata.json from any other without parsing hundreds of megabytes.
_METADATA_HEAD = re.compile(r'\A\s*\{\s*"[^"]*"\s*:\s*\{\s*"(?:metadata|audio_scores)"\s*:')
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def archive_name(subset: str) -> str:
    """Hub file name of one subset's tarball."""
    if subset not in SUBSETS:
        raise UserError(f"unknown Aria-MIDI subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    return "aria-midi-v1-ext.tar.gz" if subset == "full" else f"aria-midi-v1-{subset}-ext.tar.gz"


# --------------------------------------------------------------------------------------------
# Download


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Transport-level failures of whichever HTTP stack this huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        with contextlib.suppress(Exception):
            errors.append(getattr(__import__(module), attr))
    return tuple(errors)


@contextlib.contextmanager
def _hub_errors(what: str, where: str, *, missing: str | None = None):
    """Turn huggingface_hub / HTTP failures while doing `what` into one-line UserErrors."""
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        yield
    except OfflineModeIsEnabled:
        raise UserError(f"cannot {what}: HF_HUB_OFFLINE is set; unset it to download") from None
    except LocalEntryNotFoundError:  # what hf_hub_download raises when the HEAD call could not connect
        raise UserError(f"cannot {what}: could not reach {where}; this machine may be offline") from None
    except GatedRepoError:
        raise UserError(f"cannot {what}: the repository is gated; accept its terms on the hub and log in "
                        "(hf auth login or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise UserError(f"cannot {what}: repository not found on {where} (or it needs a token)") from None
    except RevisionNotFoundError:
        raise UserError(f"cannot {what}: no such revision on {where}") from None
    except EntryNotFoundError:
        raise UserError(missing or f"cannot {what}: no such file on {where}") from None
    except HfHubHTTPError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot {what}: {where} answered {first}") from None
    except _connection_errors() as e:
        raise UserError(f"cannot {what}: could not reach {where} ({type(e).__name__}: {e}); check the address, "
                        "this machine may be offline") from None


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256").hexdigest()


def _fetch_archive(name: str, download_dir: Path, *, repo_id: str, revision: str | None, endpoint: str | None,
                   token: str | bool | None, where: str) -> tuple[Path, dict]:
    """The archive in download_dir, fetched or resumed as needed; returns (path, {etag, commit, ...})."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    local, info_path = download_dir / name, download_dir / f"{name}.json"
    info = _read_json(info_path)
    url = hf_hub_url(repo_id, name, repo_type="dataset", revision=revision, endpoint=endpoint)
    try:
        with _hub_errors(f"download {name}", where):
            remote = get_hf_file_metadata(url, token=token)
    except UserError:
        # Offline but the archive is already complete here: no reason to fail.
        if (local.is_file() and info and info.get("repo_id") == repo_id
                and info.get("revision") == (revision or "main")):
            return local, info
        raise
    if not remote.etag or not remote.commit_hash:
        raise UserError(f"{where} does not answer like a Hugging Face Hub (no ETag / X-Repo-Commit); "
                        "check --endpoint / HF_ENDPOINT")
    etag, size = remote.etag, remote.size
    new_info = {"repo_id": repo_id, "revision": revision or "main", "commit": remote.commit_hash,
                "etag": etag, "size": size}
    if local.is_file() and info and info.get("etag") == etag:
        write_json(info_path, new_info, indent=1)
        return local, new_info

    download_dir.mkdir(parents=True, exist_ok=True)
    # huggingface_hub (>= 1.0) resumes only within one process and drops its temporary file on failure,
    # so the partial file lives here under a name tied to the remote version, and survives Ctrl-C.
    part = download_dir / f"{name}.{etag[:16]}.part"
    for stale in download_dir.glob(f"{glob.escape(name)}.*.part"):
        if stale != part:
            stale.unlink()
    location = urljoin(url, remote.location or url)
    headers = build_hf_headers(token=token)
    if _origin(location) != _origin(url):
        headers.pop("authorization", None)  # never hand the token to a CDN
    with open(part, "ab") as f:
        f.seek(0, os.SEEK_END)
        have = f.tell()
        if size is not None and have > size:
            f.truncate(0)
            have = 0
        if size is None or have < size:
            try:
                with _hub_errors(f"download {name}", where):
                    http_get(location, f, resume_size=have, headers=headers, expected_size=size,
                             displayed_filename=name)
            except UserError as e:
                raise UserError(f"{e} (partial download kept; run the same command again to resume)") from None
            except OSError as e:  # size mismatch, disk full, ...
                raise UserError(f"download of {name} stopped ({e}); run the same command again to resume") \
                    from None
    got = part.stat().st_size
    if size is not None and got != size:
        raise UserError(f"download of {name} is incomplete ({got} of {size} bytes); run again to resume")
    # For LFS files the ETag is the sha256 of the content: a free end-to-end check.
    if _SHA256.match(etag) and _sha256(part) != etag:
        part.unlink()
        raise UserError(f"download of {name} is corrupt (checksum mismatch); it was deleted, run again")
    os.replace(part, local)
    write_json(info_path, new_info, indent=1)
    return local, new_info


def _find_metadata_dir(root: Path, depth: int = 2) -> Path | None:
    """The folder holding an Aria metadata.json: root itself or up to `depth` folders below."""
    if _looks_like_aria_metadata(root / METADATA_NAME):
        return root
    if depth == 0 or not root.is_dir():
        return None
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if child.name == "data":  # thousands of shard folders, never the metadata's home
            continue
        found = _find_metadata_dir(child, depth - 1)
        if found is not None:
            return found
    return None


def _marker_path(dest: Path, name: str) -> Path:
    return dest / f".{name}.done.json"


def _within(existing: Path, staged: Path) -> bool:
    """True when everything at `existing` is also in the fresh extraction at `staged` (an earlier
    unpacking of this archive whose marker was lost): replacing it then removes nothing of the user's."""
    if existing.is_symlink() or not existing.is_dir():
        return existing.is_file() and not existing.is_symlink() and staged.is_file()
    for folder, dirs, files in os.walk(existing):
        rel = Path(folder).relative_to(existing)
        for n in dirs + files:
            mine, new = Path(folder) / n, staged / rel / n
            if mine.is_symlink() or not os.path.lexists(new) or mine.is_dir() != new.is_dir():
                return False
    return True


def _extracted_before(dest: Path) -> set[str]:
    """Top-level names in dest that earlier downloads unpacked there (from their markers)."""
    names: set[str] = set()
    for name in (archive_name(s) for s in SUBSETS):
        marker = _read_json(_marker_path(dest, name)) or {}
        tops = marker.get("tops")
        if isinstance(tops, list):
            names.update(t for t in tops if isinstance(t, str))
        elif isinstance(marker.get("root"), str):  # a marker written before "tops" was recorded
            names.add(marker["root"].split("/", 1)[0])
    return names - {"", ".", ".."}


def download_aria_midi(subset: str, dest: str | os.PathLike, *, repo_id: str = ARIA_REPO_ID,
                       revision: str | None = None, endpoint: str | None = None,
                       cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> Path:
    """Download one Aria-MIDI subset from the hub and unpack it safely into dest.

    The archive is kept in cache_dir (default ``dest/.download``): an interrupted download resumes,
    and a finished one is not fetched again. A marker in dest makes re-running a no-op (no network).
    Returns the folder holding metadata.json and the MIDI files.
    """
    from huggingface_hub import constants

    name = archive_name(subset)
    dest = Path(dest).expanduser()
    marker_path = _marker_path(dest, name)
    marker = _read_json(marker_path)
    done_root = marker.get("root") if marker else None
    if (isinstance(done_root, str) and marker.get("repo_id") == repo_id
            and marker.get("revision") == (revision or "main") and (dest / done_root).is_dir()):
        return dest / done_root

    where = (endpoint or constants.ENDPOINT).rstrip("/")
    download_dir = Path(cache_dir).expanduser() if cache_dir else dest / ".download"
    archive, info = _fetch_archive(name, download_dir, repo_id=repo_id, revision=revision, endpoint=endpoint,
                                   token=token, where=where)

    # Unpack beside dest and move in at the end, so a failure never leaves half a dataset behind.
    staging = dest / f".{name}.extracting"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        files = safe_extract(archive, staging)
        if files == 0:
            raise UserError(f"{archive} holds no files")
        meta_dir = _find_metadata_dir(staging)
        if meta_dir is None:
            tops = [p for p in staging.iterdir() if not p.name.startswith(".")]
            meta_dir = tops[0] if len(tops) == 1 and tops[0].is_dir() else staging
            _fetch_metadata_beside(meta_dir / METADATA_NAME, download_dir, repo_id=repo_id, revision=info["commit"],
                                   endpoint=endpoint, token=token, where=where, archive=name)
        root_rel = meta_dir.relative_to(staging)
        tops = sorted(entry.name for entry in staging.iterdir())
        # Replace only what an earlier download of an archive put there: a folder of the user's
        # that happens to share a name with the archive's top folder is never touched.
        ours = _extracted_before(dest)
        theirs = [t for t in tops if os.path.lexists(dest / t) and t not in ours
                  and not _within(dest / t, staging / t)]
        if theirs:
            raise UserError(f"{dest / theirs[0]} already exists and was not made by `data download`: "
                            "move it away or choose another --dest (nothing was changed)")
        for t in tops:
            target = dest / t
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif os.path.lexists(target):
                target.unlink()
            (staging / t).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    write_json(marker_path, {"repo_id": repo_id, "revision": revision or "main", "commit": info.get("commit"),
                              "etag": info.get("etag"), "archive": name, "root": root_rel.as_posix(),
                              "files": files, "tops": tops})
    return dest / root_rel


def _fetch_metadata_beside(target: Path, download_dir: Path, *, repo_id: str, revision: str | None,
                           endpoint: str | None, token, where: str, archive: str) -> None:
    """metadata.json from the repository root, for an archive that does not carry its own."""
    from huggingface_hub import hf_hub_download

    missing = f"{archive} has no {METADATA_NAME} and {repo_id} has none beside it"
    with _hub_errors(f"download {METADATA_NAME}", where, missing=missing):
        path = hf_hub_download(repo_id, METADATA_NAME, repo_type="dataset", revision=revision,
                               endpoint=endpoint, token=token, local_dir=download_dir)
    if not _looks_like_aria_metadata(Path(path)):
        raise UserError(f"{METADATA_NAME} in {repo_id} does not map file ids to {{'metadata': ...}}")
    shutil.copyfile(path, target)


def download_summary(dest: str | os.PathLike, subset: str) -> dict | None:
    """What the last successful download of `subset` into dest recorded (files, root, commit), if any."""
    return _read_json(_marker_path(Path(dest).expanduser(), archive_name(subset)))


# --------------------------------------------------------------------------------------------
# Reading a downloaded tree


def _looks_like_aria_metadata(path: Path) -> bool:
    if not path.is_file():  # a fifo named metadata.json would block the read for ever
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return bool(_METADATA_HEAD.match(head))


def _iter_midi(root: Path) -> Iterator[Path]:
    """`<id>_<segment>.mid` files under root, skipping hidden folders (downloads, staging)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if _MIDI_NAME.match(f):
                yield Path(dirpath) / f


def aria_roots(root: str | os.PathLike) -> list[Path]:
    """Folders under root (root itself, or one/two levels down) that hold an Aria metadata.json."""
    root = Path(root)
    if not root.is_dir():
        return []
    if _looks_like_aria_metadata(root / METADATA_NAME):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        d = _find_metadata_dir(child, depth=1)
        if d is not None:
            found.append(d)
    return found


def is_aria_layout(root: str | os.PathLike) -> bool:
    """True when root is (or contains) an Aria-MIDI tree: metadata.json of id -> {"metadata": ...}
    beside `<id>_<segment>.mid` files."""
    return any(next(_iter_midi(r), None) is not None for r in aria_roots(root))


@functools.lru_cache(maxsize=2)
def _load_metadata_cached(path: str, mtime_ns: int, size: int) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not an Aria-MIDI metadata.json (expected an object of file ids)")
    return data


def _load_metadata(path: Path) -> dict:
    # Preparation walks the source twice (count, then work); the full set's file is hundreds of MB.
    st = path.stat()
    try:
        return _load_metadata_cached(str(path), st.st_mtime_ns, st.st_size)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None


def _norm(name: str, values: Iterable[str] | str | None) -> frozenset[str]:
    if values is None:
        return frozenset()
    if isinstance(values, str):
        values = (values,)
    return frozenset(filter_form(name, v) for v in values if v and v.strip())


def _values(name: str, metadata: dict, keys: tuple[str, ...]) -> set[str]:
    out = set()
    for k in keys:
        v = metadata.get(k)
        for item in v if isinstance(v, (list, tuple)) else (v,):
            if item is not None and str(item).strip():
                out.add(filter_form(name, str(item)))
    return out


# Which metadata keys each filter reads; Aria calls the era "music_period".
_FILTER_KEYS = {"genre": ("genre",), "composer": ("composer",), "period": ("music_period", "period")}


def iter_aria(root: str | os.PathLike, genre: Iterable[str] = (), composer: Iterable[str] = (),
              period: Iterable[str] = (), min_audio_score: float | None = None, *,
              valid_fraction: float = 0.05) -> Iterator[SourceFile]:
    """Every `<file_id>_<segment>.mid` under an Aria-MIDI tree that passes the filters.

    Filters are case-insensitive; several values of one filter are OR-ed, different filters AND-ed.
    With any filter set, files whose recording has no metadata are left out. meta is the file's
    metadata dict plus file_id, segment and audio_score; all segments of a recording share one split.
    """
    roots = aria_roots(root)
    if not roots:
        raise UserError(f"{root} is not an Aria-MIDI folder (no metadata.json mapping file ids to "
                        "{'metadata': ...})")
    wanted = {k: _norm(k, v) for k, v in (("genre", genre), ("composer", composer), ("period", period))}
    wanted = {k: v for k, v in wanted.items() if v}
    if min_audio_score is not None:
        try:
            min_audio_score = float(min_audio_score)
        except (TypeError, ValueError):
            raise UserError(f"--min-audio-score must be a number, not {min_audio_score!r}") from None
    seen: set[tuple[str, int]] = set()
    for aroot in roots:
        table = _load_metadata(aroot / METADATA_NAME)
        for path in sorted(_iter_midi(aroot)):
            m = _MIDI_NAME.match(path.name)
            file_id, seg = m["id"], m["seg"]
            key = (file_id, int(seg))
            if key in seen:  # two subsets side by side share recordings
                continue
            entry = table.get(file_id)
            entry = entry if isinstance(entry, dict) else {}
            metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else {}
            if any(not (_values(k, metadata, _FILTER_KEYS[k]) & vals) for k, vals in wanted.items()):
                continue
            scores = entry.get("audio_scores") if isinstance(entry.get("audio_scores"), dict) else {}
            score = scores.get(seg, scores.get(str(int(seg))))
            try:
                score = None if score is None else float(score)
            except (TypeError, ValueError):
                score = None
            if min_audio_score is not None and (score is None or score < min_audio_score):
                continue
            seen.add(key)
            meta = dict(metadata)
            meta.update(file_id=file_id, segment=int(seg), audio_score=score)
            yield SourceFile(path=path, meta=meta, group=file_id, split=assign_split(file_id, valid_fraction))


# --------------------------------------------------------------------------------------------
# CLI


def add_download_parser(data_subparsers) -> None:
    """`classical-music data download aria-midi --subset ... --dest ...`."""
    p = data_subparsers.add_parser(
        "download",
        help="download and unpack a public MIDI dataset (Aria-MIDI from the Hugging Face Hub)",
        description="Fetch an Aria-MIDI subset tarball from the Hugging Face Hub (resumable; the archive is "
        "kept in DEST/.download) and unpack it safely into DEST. Re-running is a no-op. Then run "
        "`classical-music data prepare DEST` (with --genre/--composer/--period/--min-audio-score).",
    )
    p.add_argument("dataset", choices=DATASETS, help="which dataset")
    p.add_argument("--subset", choices=SUBSETS, default="pruned",
                   help="pruned (default, 821k files): lightly filtered, recommended for training; deduped "
                   "(371k): heavily filtered and deduplicated; unique (33k): only files with exact compositional "
                   "identifiers; full (1.19M): everything")
    p.add_argument("--dest", type=Path, default=Path("data/aria-midi"),
                   help="folder to unpack into (default: data/aria-midi)")
    p.add_argument("--revision", default=None, help="hub branch, tag or commit (default: main)")
    p.add_argument("--endpoint", default=None, help="hub address (default: $HF_ENDPOINT or https://huggingface.co)")
    p.set_defaults(func=_run_download)


def _run_download(args) -> int:
    dest = Path(args.dest)
    root = download_aria_midi(args.subset, dest, revision=args.revision, endpoint=args.endpoint)
    summary = download_summary(dest, args.subset) or {}
    files = summary.get("files")
    count = f"{files:,} files" if isinstance(files, int) else "files"
    print(f"aria-midi {args.subset}: {count} in {root} (next: classical-music data prepare {dest})")
    return 0
