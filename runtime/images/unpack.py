"""Unpack one layer tar into its own directory, in overlayfs' form, and never outside it.

- gzip and plain tar are told apart by their first bytes, not by the media type
  (``docker save`` writes plain tars under gzip names); zstd works when the
  ``zstandard`` module is installed.
- OCI whiteouts become what overlayfs reads: ``dir/.wh.name`` a character device
  0/0 at ``dir/name``, ``dir/.wh..wh..opq`` the xattr ``trusted.overlay.opaque=y``
  on ``dir``.
- Modes, owners (when run as root), xattrs, mtimes, symlinks, hardlinks, device
  nodes and FIFOs are kept. Directory modes and times are set last, since writing
  their children would change them.
- Safety: an entry with an absolute name or a ``..`` component, a path through a
  symlink, or a hardlink whose target is outside, rejects the whole layer
  (UnsafeLayer). Nothing is ever opened through a symlink: every ancestor is
  lstat'ed, files are created with O_NOFOLLOW | O_EXCL, and the tree is built in a
  fresh private directory that only this process writes to.
- The layer is built in a temporary sibling directory and renamed into place when
  complete, so a half-unpacked layer (an error, a full disk, a kill) is never seen.
"""

from __future__ import annotations

import errno
import gzip
import importlib
import io
import os
import shutil
import stat
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from runtime.images.digest import CHUNK, HashingReader
from runtime.images.errors import DigestMismatch, LayerError, UnsafeLayer

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META = ".wh..wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # bytes of the uncompressed tar


def unpack_layer(
    source: BinaryIO, dest: Path, layer: str, expected_diff_id: str | None = None
) -> UnpackResult:
    """Unpack the (maybe compressed) tar ``source`` to ``dest``, which must not exist.

    On any error nothing is left at ``dest`` nor beside it.
    """
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "layer directory exists already", str(dest))
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.mkdir(tmp, 0o700)
    except OSError as e:
        raise _os_error(e, layer, "", dest.parent) from None
    try:
        result = extract(source, tmp, layer)
        if expected_diff_id is not None and result.diff_id != expected_diff_id:
            raise DigestMismatch(f"layer {layer}", expected_diff_id, result.diff_id)
        os.rename(tmp, dest)
        return result
    except BaseException:
        remove_tree(tmp)
        raise


def extract(source: BinaryIO, root: Path, layer: str) -> UnpackResult:
    """Extract into the existing, empty, private directory ``root``."""
    hashing = HashingReader(_decompressed(source, layer))
    entry = ""
    try:
        with tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
            writer = _Writer(str(root), layer)
            for member in tar:
                entry = member.name
                writer.add(member, tar)
            entry = ""
            hashing.drain()  # the end-of-archive blocks are part of the diff id
            writer.finish()
    except (UnsafeLayer, DigestMismatch):
        raise
    except (tarfile.TarError, EOFError, ValueError) as e:
        where = f" at {entry!r}" if entry else ""
        raise LayerError(f"layer {layer}: not a valid tar{where}: {e}") from None
    except OSError as e:
        raise _os_error(e, layer, entry, root.parent) from None
    return UnpackResult(diff_id=hashing.digest, size=hashing.size)


def _os_error(e: OSError, layer: str, entry: str, where: Path) -> LayerError:
    """The LayerError for a failed write; a full disk says so, and where, plainly."""
    at = f" at {entry!r}" if entry else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        name = errno.errorcode[e.errno]
        what = "disk full" if e.errno == errno.ENOSPC else "disk quota exceeded"
        return LayerError(f"layer {layer}: unpack failed{at}: {what} ({name}) in {where}: "
                          "free space there and retry")
    return LayerError(f"layer {layer}: unpack failed{at}: {e}")


def classify_whiteout(name: str) -> tuple[str, str] | None:
    """For a cleaned entry name: ("opaque", dir) or ("whiteout", hidden path), else None."""
    parent, _, base = name.rpartition("/")
    if base == OPAQUE:
        return ("opaque", parent)
    if base.startswith(WHITEOUT_META):
        return ("meta", parent)  # aufs' private files: nothing for overlayfs
    if base.startswith(WHITEOUT_PREFIX):
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            return ("bad", name)
        return ("whiteout", f"{parent}/{hidden}" if parent else hidden)
    return None


def clean_name(name: str, layer: str) -> str:
    """The entry's path relative to the layer root ('' for the root), or UnsafeLayer."""
    if name.startswith("/"):
        raise UnsafeLayer(layer, name, "absolute path")
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsafeLayer(layer, name, "'..' would leave the layer directory")
        parts.append(part)
    return "/".join(parts)


def remove_tree(path: Path) -> None:
    """Remove a tree, even one with read-only directories in it."""
    def retry(func: Any, target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            func(target)
        except FileNotFoundError:
            pass

    if path.is_symlink() or path.exists():
        shutil.rmtree(path, onerror=retry)


def _decompressed(source: BinaryIO, layer: str) -> BinaryIO:
    buffered = (source if isinstance(source, io.BufferedReader)
                else io.BufferedReader(cast(Any, source)))
    magic = buffered.peek(4)[:4]
    if magic[:2] == _GZIP_MAGIC:
        return cast(BinaryIO, gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic == _ZSTD_MAGIC:
        try:
            zstandard = importlib.import_module("zstandard")
        except ImportError:
            raise LayerError(
                f"layer {layer}: zstd-compressed; install the 'zstandard' module to read it"
            ) from None
        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(buffered))
    return cast(BinaryIO, buffered)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class _Writer:
    """Creates the entries of one tar, in order, inside ``root``."""

    def __init__(self, root: str, layer: str) -> None:
        self.root = root
        self.layer = layer
        self.as_root = os.geteuid() == 0
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.root_member: tarfile.TarInfo | None = None

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        rel = clean_name(member.name, self.layer)
        if rel == "":
            if member.isdir():
                self.root_member = member
            return
        white = classify_whiteout(rel)
        if white is not None:
            self._whiteout(member, white)
            return
        path = self._prepare(member.name, rel)
        if member.isdir():
            self._replace(path, keep_dir=True)
            if not _is_dir(path):
                os.mkdir(path, 0o700)
            self.dirs.append((path, member))
            return
        self._replace(path, keep_dir=False)
        if member.isreg():
            self._write_file(path, member, tar)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            os.link(self._link_target(member), path, follow_symlinks=False)
            return  # a hardlink shares its target's inode and metadata
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            raise LayerError(
                f"layer {self.layer}: entry {member.name!r}: unsupported type {member.type!r}"
            )
        self._metadata(path, member)

    def finish(self) -> None:
        for path, member in reversed(self.dirs):
            self._metadata(path, member)
        if self.root_member is not None:
            self._metadata(self.root, self.root_member)
        else:
            os.chmod(self.root, 0o755)

    def _prepare(self, name: str, rel: str) -> str:
        """The entry's full path, with its parents made real directories inside root."""
        current = self.root
        for part in rel.split("/")[:-1]:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeLayer(self.layer, name, f"path goes through the symlink "
                                  f"{os.path.relpath(current, self.root)!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(self.layer, name, f"parent "
                                  f"{os.path.relpath(current, self.root)!r} is not a directory")
        return os.path.join(self.root, rel)

    def _replace(self, path: str, keep_dir: bool) -> None:
        """Remove what is at ``path`` (never following it), as a later tar entry wins."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                remove_tree(Path(path))
        else:
            os.unlink(path)

    def _write_file(self, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as out:
            data = tar.extractfile(member)
            if data is not None:
                while chunk := data.read(CHUNK):
                    out.write(chunk)

    def _link_target(self, member: tarfile.TarInfo) -> str:
        if member.linkname.startswith("/"):
            raise UnsafeLayer(self.layer, member.name, "hardlink to an absolute path "
                              f"{member.linkname!r}")
        try:
            rel = clean_name(member.linkname, self.layer)
        except UnsafeLayer:
            raise UnsafeLayer(self.layer, member.name, f"hardlink to {member.linkname!r} "
                              "outside the layer") from None
        if rel == "":
            raise UnsafeLayer(self.layer, member.name, "hardlink to the layer root")
        target = self._prepare(member.name, rel)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise UnsafeLayer(self.layer, member.name, f"hardlink to {member.linkname!r}, "
                              "which is not earlier in the layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(self.layer, member.name, "hardlink to a directory")
        return target

    def _whiteout(self, member: tarfile.TarInfo, white: tuple[str, str]) -> None:
        kind, rel = white
        if kind == "meta":
            return
        if kind == "bad":
            raise UnsafeLayer(self.layer, member.name, "whiteout of no name")
        if kind == "opaque":
            # Checking the marker's own path makes (or checks) its directory like a parent.
            marker = self._prepare(member.name, f"{rel}/{OPAQUE}" if rel else OPAQUE)
            path = os.path.dirname(marker)
            self._need_root(member, "an opaque directory")
            os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        path = self._prepare(member.name, rel)
        self._replace(path, keep_dir=False)
        self._need_root(member, "a whiteout")
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        if self.as_root:
            os.lchown(path, member.uid, member.gid)

    def _need_root(self, member: tarfile.TarInfo, what: str) -> None:
        if not self.as_root:
            raise LayerError(f"layer {self.layer}: entry {member.name!r}: making {what} for "
                             "overlayfs needs root")

    def _metadata(self, path: str, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.lchown(path, member.uid, member.gid)
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR_PAX):
                self._setxattr(path, key[len(_XATTR_PAX):],
                               value.encode("utf-8", "surrogateescape"))
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears set-id bits
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def _setxattr(self, path: str, name: str, value: bytes) -> None:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as e:
            # Without root only user.* can be set; a file system may not take some names.
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                e.errno == errno.EPERM and not self.as_root
            ):
                return
            raise
