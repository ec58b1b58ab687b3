"""The token cache: uint16 shards on disk plus a manifest, so memory stays flat at any corpus size.

    CACHE/
      tokenizer.json         how the tokens were made
      shards/tokens-NNNNN.bin  every prepared file's events back to back (BOS ... EOS), uint16
      manifest.jsonl         one line per file seen: where its events are, its metadata and split,
                             or why it was skipped (appended as files finish: crash-safe, incremental)
      index.npz              the manifest as arrays (shard, offset, length, split), for fast loading
      cache.json             corpus statistics
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import write_json
from ..tokenizer import Tokenizer, load_tokenizer

SHARD_TOKENS = 256 * 2**20  # 512 MB per shard keeps single files manageable for copying
SPLITS = ("train", "valid", "test")




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
        shard_end: dict[int, int] = {}
        if self.manifest_path.exists():
            for rec in read_manifest(self.manifest_path):
                self.seen[rec["key"]] = (rec.get("size"), rec.get("mtime"))
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

    def _shard_path(self, i: int) -> Path:
        return self.out / "shards" / f"tokens-{i:05d}.bin"

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

    def _write(self, rec: dict) -> None:
        self._mf.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._mf.flush()
        self.seen[rec["key"]] = (rec["size"], rec["mtime"])

    def close(self) -> dict:
        """Flush, then rebuild index.npz and cache.json from the manifest (the latest line per file wins)."""
        self._fh.close()
        self._mf.close()
        return build_index(self.out)


def read_manifest(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except ValueError:  # a line cut short by a crash: that file is simply redone
                    continue


def build_index(out: Path) -> dict:
    latest: dict[str, dict] = {}
    for rec in read_manifest(out / "manifest.jsonl"):
        latest[rec["key"]] = rec
    files = [r for r in latest.values() if "shard" in r]
    split_code = {s: i for i, s in enumerate(SPLITS)}
    np.savez(
        out / "index.tmp.npz",
        shard=np.array([r["shard"] for r in files], np.int32),
        offset=np.array([r["offset"] for r in files], np.int64),
        length=np.array([r["length"] for r in files], np.int64),
        split=np.array([split_code.get(r.get("split"), 0) for r in files], np.int8),
    )
    os.replace(out / "index.tmp.npz", out / "index.npz")
    stats = {"tokenizer": load_tokenizer(out).to_dict(), "files": len(files),
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
    write_json(out / "cache.json", stats)
    return stats


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
        idx = np.load(self.root / "index.npz")
        self.shard, self.offset, self.length, self.split = (idx[k] for k in ("shard", "offset", "length", "split"))
        self.tokenizer = load_tokenizer(self.root)
        self._maps: dict[int, np.memmap] = {}

    def files(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))

    def tokens(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Events of file i (a slice of them), read from the memory map."""
        s = int(self.shard[i])
        if s not in self._maps:
            self._maps[s] = np.memmap(self.root / "shards" / f"tokens-{s:05d}.bin", dtype=np.uint16, mode="r")
        n = int(self.length[i])
        stop = n if stop is None else min(stop, n)
        base = int(self.offset[i])
        return np.asarray(self._maps[s][base + start: base + stop])

    def __getstate__(self):  # memmaps are reopened in each DataLoader worker
        d = self.__dict__.copy()
        d["_maps"] = {}
        return d
