"""New layers: a build step's changes as an OCI layer tar, stored and unpacked.

A RUN step's changes are the overlay upper directory it wrote; ``add_upper`` turns
that into tar entries, converting overlayfs' deletion marks back to OCI's:

- a character device 0/0 (or, on newer kernels and ``userxattr`` mounts, an empty
  file with ``trusted.overlay.whiteout`` / ``user.overlay.whiteout``) at ``dir/name``
  becomes an empty ``dir/.wh.name``;
- a directory with ``trusted.overlay.opaque=y`` (``user.overlay.opaque``) gets a
  ``dir/.wh..wh..opq`` entry: nothing of the layers below shows through it.

Modes, owners, times, symlinks, hardlinks, device nodes and xattrs are kept;
overlayfs' own bookkeeping xattrs (``*.overlay.*``) are not. COPY, ADD and WORKDIR
add entries directly (``LayerWriter.add``).

``store_layer`` then gzips the tar into a blob (``mtime`` 0, so equal content gives
an equal digest) and unpacks the tar into the store's layer directory, through the
same checked path a pulled layer takes.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from runtime.images import layers as _layers
from runtime.images.digest import CHUNK
from runtime.images.oci import OCI_LAYER_GZIP, Descriptor
from runtime.images.store import ImageStore
from runtime.images.unpack import OPAQUE, WHITEOUT_PREFIX, unpack_layer

_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_XATTR_PAX = "SCHILY.xattr."


class LayerWriter:
    """An uncompressed layer tar being written to ``path``; entries in the order added."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.PAX_FORMAT)
        self._links: dict[tuple[int, int], str] = {}

    def add(self, info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        info.uname = info.gname = ""  # owners are numbers inside an image
        self._tar.addfile(info, data)
        self.count += 1

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
                mtime: float = 0) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, int(mtime)
        self.add(info)

    def add_marker(self, name: str) -> None:
        """An empty regular file: OCI's whiteout and opaque markers."""
        info = tarfile.TarInfo(name)
        info.mode = 0o600
        self.add(info)

    def add_path(self, name: str, path: str, st: os.stat_result, *, uid: int | None = None,
                 gid: int | None = None, mode: int | None = None) -> None:
        """The file system object at ``path`` (not followed) as entry ``name``."""
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode) if mode is None else mode
        info.uid = st.st_uid if uid is None else uid
        info.gid = st.st_gid if gid is None else gid
        info.mtime = int(st.st_mtime)
        xattrs = _xattrs(path)
        if xattrs:
            info.pax_headers = {_XATTR_PAX + key: value.decode("utf-8", "surrogateescape")
                                for key, value in xattrs.items()}
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG and st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.add(info)
                return
            self._links[(st.st_dev, st.st_ino)] = name
        if kind == stat.S_IFREG:
            info.size = st.st_size
            with open(path, "rb") as f:
                self.add(info, f)
            return
        if kind == stat.S_IFDIR:
            info.type = tarfile.DIRTYPE
        elif kind == stat.S_IFLNK:
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif kind == stat.S_IFIFO:
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets belong to a process that is gone; tar has no type for them
        self.add(info)

    def close(self) -> None:
        self._tar.close()
        self._file.close()


def add_upper(writer: LayerWriter, upper: Path) -> None:
    """Add everything below the overlay upper dir ``upper``, deletions as OCI whiteouts."""
    _add_tree(writer, str(upper), "")


def _add_tree(writer: LayerWriter, directory: str, prefix: str) -> None:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = entry.path
        name = f"{prefix}{entry.name}"
        st = os.lstat(path)
        if is_whiteout(path, st):
            writer.add_marker(f"{prefix}{WHITEOUT_PREFIX}{entry.name}")
            continue
        writer.add_path(name, path, st)
        if stat.S_ISDIR(st.st_mode):
            if is_opaque(path):
                writer.add_marker(f"{name}/{OPAQUE}")
            _add_tree(writer, path, f"{name}/")


def is_whiteout(path: str, st: os.stat_result) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return any(_getxattr(path, f"{p}whiteout") is not None for p in _OVERLAY_XATTRS)
    return False


def is_opaque(path: str) -> bool:
    return any(_getxattr(path, f"{p}opaque") == b"y" for p in _OVERLAY_XATTRS)


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return None
        raise


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTRS):
            continue
        value = _getxattr(path, name)
        if value is not None:
            out[name] = value
    return out


def store_layer(store: ImageStore, tar_path: Path, what: str) -> tuple[Descriptor, str]:
    """Store the tar at ``tar_path`` as a gzip layer and unpack it; (descriptor, diff id)."""
    gz_path = tar_path.with_name(tar_path.name + ".gz")
    diff_hash, blob_hash = hashlib.sha256(), hashlib.sha256()
    try:
        with open(tar_path, "rb") as src, open(gz_path, "wb") as raw:
            hashing = _HashingWriter(raw, blob_hash)
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0,
                               compresslevel=6) as gz:
                while chunk := src.read(CHUNK):
                    diff_hash.update(chunk)
                    gz.write(chunk)
        diff_id = "sha256:" + diff_hash.hexdigest()
        digest = "sha256:" + blob_hash.hexdigest()
        with store.blob_writer(digest, f"layer of {what}") as w:
            if not w.done:
                w.restart()
                with open(gz_path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        w.write(chunk)
                w.commit()
        size = store.blob_path(digest).stat().st_size
    finally:
        gz_path.unlink(missing_ok=True)
    dest = store.layer_path(diff_id)
    if not dest.is_dir():
        with _layers.layer_lock(store, diff_id):
            if not dest.is_dir():
                with open(tar_path, "rb") as f:
                    unpack_layer(f, dest, _layers.short(digest), expected_diff_id=diff_id)
    return Descriptor(OCI_LAYER_GZIP, digest, size), diff_id


class _HashingWriter:
    def __init__(self, raw: BinaryIO, h: hashlib._Hash) -> None:
        self.raw = raw
        self.h = h

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()
