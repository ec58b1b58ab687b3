"""The token cache: uint16 shards on disk plus a manifest, so memory stays flat at any corpus size.

    CACHE/
      tokenizer.json         how the tokens were made
      shards/tokens-NNNNN.bin  every prepared file's events back to back (BOS ... EOS), uint16
      manifest.jsonl         one line per file seen: where its events are, its metadata and split,
                             or why it was skipped (appended as files finish: crash-safe, incremental)
      shards/conditions-NNNNN.bin  each event's (density, key) condition codes, uint8 pairs aligned
                             with the token shard (filled in by build_index, so older caches gain them)
      index.npz              the manifest as arrays (shard, offset, length, split, and each file's
                             composer, period, kind and hours), for fast loading
      cache.json             corpus statistics
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import conditions as cond
from ..errors import UserError
from ..files import open_regular, read_text, require_regular, write_json
from ..tokenizer import Tokenizer, load_tokenizer

SHARD_TOKENS = 256 * 2**20  # 512 MB per shard keeps single files manageable for copying
SPLITS = ("train", "valid", "test")


def token_shard_path(root: Path, i: int) -> Path:
    return Path(root) / "shards" / f"tokens-{i:05d}.bin"


def condition_shard_path(root: Path, i: int) -> Path:
    return Path(root) / "shards" / f"conditions-{i:05d}.bin"


class CacheWriter:
    """Appends files' events to shards and records them in the manifest, resuming where it left off."""

    def __init__(self, out: str | Path, tokenizer: Tokenizer):
        self.out = Path(out)
        self.tokenizer = tokenizer
        (self.out / "shards").mkdir(parents=True, exist_ok=True)
        existing = self.out / "tokenizer.json"
        if existing.exists():
            old = load_tokenizer(existing).to_dict()
            if old != tokenizer.to_dict():
                raise UserError(
                    f"{self.out} was prepared with tokenizer {old['name']!r} {old}; use another --out"
                )
        tokenizer.save(self.out)
        self.manifest_path = self.out / "manifest.jsonl"
        self.seen: dict[str, tuple[int, float]] = {}
        self.indexed: set[str] = set()  # keys whose latest record holds tokens
        shard_end: dict[int, int] = {}
        if self.manifest_path.exists():
            for rec in read_manifest(self.manifest_path):
                self.seen[rec["key"]] = (rec.get("size"), rec.get("mtime"))
                (self.indexed.add if "shard" in rec else self.indexed.discard)(rec["key"])
                if "shard" in rec:
                    shard_end[rec["shard"]] = max(shard_end.get(rec["shard"], 0), rec["offset"] + rec["length"])
        self.shard = max(shard_end, default=0)
        self.shard_len = shard_end.get(self.shard, 0)
        # A crash between writing tokens and their manifest line leaves orphan bytes: cut them.
        for i, end in shard_end.items():
            p = self._shard_path(i)
            if p.exists() and p.stat().st_size > end * 2:
                os.truncate(p, end * 2)
        self._fh = open(self._shard_path(self.shard), "ab")
        self._mf = open(self.manifest_path, "a", encoding="utf-8")
        try:  # the folder the cache was last prepared from (None: unknown, an older cache)
            self.source = json.loads(read_text(self.out / "cache.json")).get("source")
        except (OSError, ValueError, AttributeError):
            self.source = None

    def _shard_path(self, i: int) -> Path:
        return token_shard_path(self.out, i)

    def is_done(self, key: str, size: int, mtime: float) -> bool:
        return self.seen.get(key) == (size, mtime)

    def add(self, key: str, size: int, mtime: float, tokens: np.ndarray, **fields) -> None:
        if self.shard_len and self.shard_len + len(tokens) > SHARD_TOKENS:
            self._fh.close()
            self.shard, self.shard_len = self.shard + 1, 0
            self._fh = open(self._shard_path(self.shard), "ab")
        self._fh.write(np.ascontiguousarray(tokens, dtype=np.uint16).tobytes())
        self._fh.flush()
        rec = {"key": key, "size": size, "mtime": mtime, "shard": self.shard, "offset": self.shard_len,
               "length": int(len(tokens)), **fields}
        self._write(rec)
        self.shard_len += len(tokens)

    def skip(self, key: str, size: int, mtime: float, reason: str) -> None:
        self._write({"key": key, "size": size, "mtime": mtime, "skipped": reason})

    def drop_missing(self, root: Path) -> int:
        """Forget files that are gone from `root` (deleted from the source folder), so they stop
        training; returns how many prepared files were dropped. A cache last prepared from another
        folder keeps its files: their absence from this one says nothing."""
        root = Path(root).resolve()
        same = self.source is None or self.source == str(root)
        self.source = str(root)
        if not same:
            return 0
        dropped = 0
        for key in [k for k, v in self.seen.items() if v != (None, None)]:
            if not os.path.lexists(root / key):  # lexists: a dangling link is still "there" (skipped)
                dropped += key in self.indexed
                self._write({"key": key, "size": None, "mtime": None, "removed": "no longer in the source"})
        return dropped

    def _write(self, rec: dict) -> None:
        self._mf.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._mf.flush()
        self.seen[rec["key"]] = (rec["size"], rec["mtime"])
        (self.indexed.add if "shard" in rec else self.indexed.discard)(rec["key"])

    def close(self) -> dict:
        """Flush, then rebuild index.npz and cache.json from the manifest (the latest line per file wins)."""
        self._fh.close()
        self._mf.close()
        return build_index(self.out, self.source)


def read_manifest(path: Path):
    with open_regular(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except ValueError:  # a line cut short by a crash: that file is simply redone
                    continue


def build_index(out: Path, source: str | None = None) -> dict:
    latest: dict[str, dict] = {}
    for rec in read_manifest(out / "manifest.jsonl"):
        latest[rec["key"]] = rec
    files = [r for r in latest.values() if "shard" in r]
    split_code = {s: i for i, s in enumerate(SPLITS)}
    styles = [cond.file_conditions(r.get("meta") or {}) for r in files]
    tokenizer = load_tokenizer(out)
    fill_event_conditions(out, files, tokenizer)
    np.savez(
        out / "index.tmp.npz",
        shard=np.array([r["shard"] for r in files], np.int32),
        offset=np.array([r["offset"] for r in files], np.int64),
        length=np.array([r["length"] for r in files], np.int64),
        split=np.array([split_code.get(r.get("split"), 0) for r in files], np.int8),
        # Plain unicode arrays (never object arrays), so np.load needs no pickle.
        **{name: np.array([st[name] or "" for st in styles], dtype=str).astype("<U64")
           for name in cond.FILE_CONDITIONS},
        hours=np.array([r.get("music_seconds", 0.0) / 3600 for r in files], np.float64),
    )
    os.replace(out / "index.tmp.npz", out / "index.npz")
    stats = {"tokenizer": tokenizer.to_dict(), "files": len(files),
             "skipped": sum(1 for r in latest.values() if "skipped" in r), "splits": {}}
    for s in SPLITS:
        sel = [r for r in files if r.get("split", "train") == s]
        if sel:
            stats["splits"][s] = {
                "files": len(sel),
                "events": int(sum(r["length"] for r in sel)),
                "notes": int(sum(r.get("notes", 0) for r in sel)),
                "hours": round(sum(r.get("music_seconds", 0.0) for r in sel) / 3600, 3),
            }
    stats["events"] = int(sum(r["length"] for r in files))
    stats["conditions"] = _condition_stats(files, styles, tokenizer)
    if source:
        stats["source"] = source
    write_json(out / "cache.json", stats)
    return stats


def _condition_stats(files, styles, tokenizer) -> dict:
    """Training hours per composer, period and kind: what a model trained on this cache can know."""
    out: dict = {}
    for name in cond.FILE_CONDITIONS:
        hours: dict[str, float] = {}
        for r, st in zip(files, styles):
            if r.get("split", "train") == "train" and st[name]:
                hours[st[name]] = hours.get(st[name], 0.0) + r.get("music_seconds", 0.0) / 3600
        out[name] = {k: round(v, 3) for k, v in sorted(hours.items(), key=lambda kv: -kv[1])}
    out["event_conditions"] = list(cond.EVENT_CONDITIONS) if tokenizer.timed else []
    return out


def fill_event_conditions(out: Path, files: list[dict], tokenizer) -> int:
    """Bring every condition shard level with its token shard; returns the events computed.

    Only what is missing is computed (files past the condition shard's end), from the tokens
    already in the cache: an old cache gains its conditions without re-tokenizing.
    """
    by_shard: dict[int, list[dict]] = {}
    for r in files:
        by_shard.setdefault(r["shard"], []).append(r)
    done = 0
    for shard, recs in by_shard.items():
        recs.sort(key=lambda r: r["offset"])
        path = condition_shard_path(out, shard)
        width = len(cond.EVENT_CONDITIONS)
        have = path.stat().st_size // width if path.exists() else 0
        todo = [r for r in recs if r["offset"] + r["length"] > have]
        if not todo:
            continue
        tokens = np.memmap(token_shard_path(out, shard), dtype=np.uint16, mode="r")
        with open(path, "ab") as f:
            pos = min(have, todo[0]["offset"])  # a file cut short by a crash is redone whole
            f.truncate(pos * width)
            for r in todo:
                if r["offset"] > pos:  # bytes of a superseded copy of a file: no conditions
                    f.write(bytes(width * (r["offset"] - pos)))
                    pos = r["offset"]
                ev = cond.event_conditions(np.asarray(tokens[r["offset"]: r["offset"] + r["length"]]), tokenizer)
                f.write(np.ascontiguousarray(ev).tobytes())
                pos = r["offset"] + r["length"]
                done += r["length"]
        del tokens
    return done


@dataclass
class Cache:
    """Read side: memory-mapped shards and per-file offsets; nothing is loaded into RAM up front."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        if not (self.root / "index.npz").exists():
            raise UserError(
                f"no prepared data at {self.root}: run `classical-music data prepare MIDI_DIR --out {self.root}` first"
            )
        try:
            require_regular(self.root / "index.npz")
            idx = np.load(self.root / "index.npz", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {self.root / 'index.npz'}: {e}") from None
        self.shard, self.offset, self.length, self.split = (idx[k] for k in ("shard", "offset", "length", "split"))
        # Per-file style metadata: absent from caches made before conditions existed.
        self.styles = {k: idx[k] for k in cond.FILE_CONDITIONS if k in idx.files}
        self.hours = idx["hours"] if "hours" in idx.files else np.zeros(len(self.length))
        self.tokenizer = load_tokenizer(self.root)
        self._maps: dict[int, np.memmap] = {}
        self._cond_maps: dict[int, np.memmap] = {}
        self.has_event_conditions = self.tokenizer.timed and self._condition_shards_complete()

    def _condition_shards_complete(self) -> bool:
        for s in np.unique(self.shard).tolist():
            mine = self.shard == s
            need = int((self.offset[mine] + self.length[mine]).max())
            p = condition_shard_path(self.root, s)
            if not p.exists() or p.stat().st_size < len(cond.EVENT_CONDITIONS) * need:
                return False
        return True

    def available_conditions(self) -> tuple[str, ...]:
        """The conditions this cache can train: metadata ones some file has, event ones when stored."""
        names = [n for n in cond.FILE_CONDITIONS if n in self.styles and (self.styles[n] != "").any()]
        if self.has_event_conditions:
            names += list(cond.EVENT_CONDITIONS)
        return tuple(n for n in cond.NAMES if n in names)

    def composer_hours(self, split: str = "train") -> dict[str, float]:
        if "composer" not in self.styles:
            return {}
        out: dict[str, float] = {}
        for i in self.files(split):
            c = str(self.styles["composer"][i])
            if c:
                out[c] = out.get(c, 0.0) + float(self.hours[i])
        return out

    def event_conditions(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[m, len(EVENT_CONDITIONS)] uint8 codes (density, key) of file i's events start:stop."""
        return self._slice(self._cond_maps, condition_shard_path, np.uint8, i, start, stop,
                           width=len(cond.EVENT_CONDITIONS))

    def files(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))

    def tokens(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Events of file i (a slice of them), read from the memory map."""
        return self._slice(self._maps, token_shard_path, np.uint16, i, start, stop)

    def _slice(self, maps: dict, path_of, dtype, i: int, start: int, stop: int | None, width: int = 0) -> np.ndarray:
        """Rows start:stop of file i in a shard laid out like the token shards (width values a row)."""
        s = int(self.shard[i])
        if s not in maps:
            m = np.memmap(path_of(self.root, s), dtype=dtype, mode="r")
            maps[s] = m.reshape(-1, width) if width else m
        n = int(self.length[i])
        stop = n if stop is None else min(stop, n)
        base = int(self.offset[i])
        return np.asarray(maps[s][base + start: base + stop])

    def __getstate__(self):  # memmaps are reopened in each DataLoader worker
        d = self.__dict__.copy()
        d["_maps"] = {}
        d["_cond_maps"] = {}
        return d
