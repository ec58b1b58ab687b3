"""Unpack a tarball that may be hostile: only folders and regular files, never outside the destination.

The Aria-MIDI archives hold nothing but folders and regular files, so everything else is refused:
symbolic and hard links, devices, fifos, absolute names, ``..``, names past NAME_MAX/PATH_MAX-like
bounds, sparse members (a few hundred bytes can stand for gigabytes of holes), members over
16 MB (the MIDI reader's own cap; only a metadata.json may be larger), and a member that would
overwrite one already written. Paths are never checked with
``os.path.realpath`` (which stops resolving past PATH_MAX: CVE-2025-4517, which Python's own
``data`` filter fell for): each member is created component by component under a descriptor of the
destination (``mkdir``/``open`` relative to a directory fd, ``O_NOFOLLOW``), so even a link that was
already in the destination cannot redirect a write.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import stat
import tarfile
import zlib
from pathlib import Path

from ..errors import UserError
from ..notes import MAX_FILE_BYTES

MAX_MEMBER_BYTES = MAX_FILE_BYTES  # no MIDI file past the reader's cap is worth unpacking
MAX_METADATA_BYTES = 4 * 2**30  # Aria's metadata.json, hundreds of MB for the full set

MAX_NAME_BYTES = 255  # one path component (NAME_MAX on Linux, macOS and Windows)
MAX_PATH_BYTES = 1024  # a whole member name; Aria's longest is ~60
MAX_DEPTH = 32  # folders in a member name; Aria's deepest is 3
_DRIVE = re.compile(r"^[A-Za-z]:")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FD = os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd and bool(_O_NOFOLLOW)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    return "special member"


def member_parts(member: tarfile.TarInfo) -> list[str]:
    """The member's path components, or UserError saying why it may not be extracted."""
    name = member.name
    shown = name if len(name) <= 80 else name[:60] + "..." + name[-12:]
    unsafe = f"unsafe archive member {shown!r}"
    if not (member.isreg() or member.isdir()):
        raise UserError(f"{unsafe}: {_kind(member)} (only folders and regular files are extracted)")
    if member.issparse():
        raise UserError(f"{unsafe}: a sparse file (its size on disk is not what the archive says)")
    cap = MAX_METADATA_BYTES if name.rsplit("/", 1)[-1] == "metadata.json" else MAX_MEMBER_BYTES
    if member.isreg() and member.size > cap:
        raise UserError(f"{unsafe}: {member.size / 2**20:,.0f} MB, over the {cap // 2**20:,} MB a member may hold")
    if "\0" in name or "\\" in name:
        raise UserError(f"{unsafe}: NUL or backslash in its name")
    if name.startswith("/") or os.path.isabs(name) or _DRIVE.match(name):
        raise UserError(f"{unsafe}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"{unsafe}: '..' in path")
    if len(os.fsencode(name)) > MAX_PATH_BYTES or len(parts) > MAX_DEPTH:
        raise UserError(f"{unsafe}: path longer than {MAX_PATH_BYTES} bytes or deeper than {MAX_DEPTH} folders")
    if any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts):
        raise UserError(f"{unsafe}: a name longer than {MAX_NAME_BYTES} bytes")
    return parts


class _Tree:
    """Folders under the destination, opened relative to its descriptor without following links."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.root = os.open(dest, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC) if _DIR_FD else None
        self._cached: tuple[tuple[str, ...], int | None] = ((), self.root)  # last folder opened

    def close(self) -> None:
        self._drop()
        if self.root is not None:
            os.close(self.root)

    def _drop(self) -> None:
        parts, fd = self._cached
        if parts and fd is not None:
            os.close(fd)
        self._cached = ((), self.root)

    def folder(self, parts: tuple[str, ...], shown: str) -> int | None:
        """A descriptor of dest/parts (made if missing); None on systems without dir_fd support."""
        if self._cached[0] == parts:
            return self._cached[1]
        self._drop()
        if self.root is None:
            self._mkdirs_by_path(parts, shown)
            return None
        fd = os.dup(self.root)
        try:
            for p in parts:
                with _no_clobber(shown):
                    try:
                        os.mkdir(p, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    # O_NOFOLLOW|O_DIRECTORY: a link or a file where a folder should be is refused
                    nxt = os.open(p, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        self._cached = (parts, fd)
        return fd

    def _mkdirs_by_path(self, parts: tuple[str, ...], shown: str) -> None:
        # Fallback (no dir_fd, e.g. Windows): we never create links, so lstat-checked mkdirs suffice.
        path = self.dest
        for p in parts:
            path = path / p
            with _no_clobber(shown):
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    pass
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))

    def create(self, parts: tuple[str, ...], shown: str) -> int:
        """A new regular file dest/parts open for writing; refuses to replace anything."""
        parent = self.folder(parts[:-1], shown)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        with _no_clobber(shown):
            if parent is None:
                return os.open(self.dest.joinpath(*parts), flags, 0o644)
            return os.open(parts[-1], flags, 0o644, dir_fd=parent)

    def remove(self, parts: tuple[str, ...]) -> None:
        parent = self._cached[1] if self._cached[0] == parts[:-1] else None
        try:
            if parent is not None:
                os.unlink(parts[-1], dir_fd=parent)
            elif self.root is None:
                os.unlink(self.dest.joinpath(*parts))
        except OSError:
            pass


class _no_clobber:
    """OSErrors that mean "something is already there" become a one-line UserError."""

    def __init__(self, shown: str):
        self.shown = shown

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is None or not issubclass(kind, OSError):
            return False
        if isinstance(e, (FileExistsError, NotADirectoryError, IsADirectoryError)) or e.errno in (
                errno.ELOOP, errno.EMLINK, errno.ENOTDIR, errno.EEXIST):
            raise UserError(f"unsafe archive member {self.shown!r}: it would replace or pass through "
                            "something already extracted (a duplicate name, or a link or file where a "
                            "folder should be)") from None
        return False


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike, *, progress: bool | None = None) -> int:
    """Extract a (compressed) tarball into dest: folders and regular files only, nothing outside.

    Any other member (see the module docstring) stops the extraction with a one-line UserError;
    so does a corrupt archive or a failed write (the file being written is removed). Ownership and
    modes are not taken from the archive (files 0644, folders 0755). Returns the number of regular
    files written.
    """
    from tqdm import tqdm

    tar_path, dest = Path(tar_path), Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tree = _Tree(dest)
    except OSError as e:
        raise UserError(f"cannot create {dest}: {e.strerror or e}") from None
    files = 0
    try:
        with open(tar_path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar, tqdm(
            total=tar_path.stat().st_size, unit="B", unit_scale=True, desc="extracting",
            disable=None if progress is None else not progress,
        ) as bar:
            while (member := tar.next()) is not None:
                parts = tuple(member_parts(member))
                if parts and member.isdir():
                    tree.folder(parts, member.name)
                elif parts:
                    _write(tar, member, tree, parts)
                    files += 1
                # TarFile remembers every member; a million of them would cost ~0.5 GB for nothing.
                tar.members.clear()
                bar.update(raw.tell() - bar.n)
    except UserError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise UserError(f"{tar_path} is corrupt or not a tar archive ({e}); delete it and run again") from None
    except OSError as e:
        raise UserError(f"cannot extract {tar_path} into {dest}: {e.strerror or e}") from None
    finally:
        tree.close()
    return files


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, tree: _Tree, parts: tuple[str, ...]) -> None:
    fd = tree.create(parts, member.name)
    try:
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(member)
            while block := src.read(1 << 20):
                out.write(block)
    except BaseException:
        tree.remove(parts)  # never leave a half-written file
        raise
