"""ADD: fetching a URL, unpacking a local tar archive (plain, gzip, bzip2, xz), and
``plan_add``, which turns an ADD's sources into COPY's entries.

A fetched file is not unpacked (as in Docker); its name is the URL path's last
component and its mode 0600. An archive is recognised by its content, not its
name, and extracted through the same checked code that unpacks image layers, so
an entry cannot land outside its directory.
"""

from __future__ import annotations

import bz2
import email.utils
import hashlib
import lzma
import os
import posixpath
import shutil
import urllib.parse
from pathlib import Path
from typing import BinaryIO

from runtime.images.buildcopy import ContextTree, CopyEntry, CopyError, expand_sources, plan_copy
from runtime.images.digest import CHUNK
from runtime.images.dockerignore import IgnoreRules
from runtime.images.imageview import ImageView
from runtime.images.unpack import extract

TIMEOUT = 60.0


class FetchError(OSError):
    """A URL that could not be fetched, or whose content is not what ``--checksum`` says."""


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def url_basename(url: str) -> str:
    return posixpath.basename(urllib.parse.urlparse(url).path)


def fetch_url(url: str, dest: Path, checksum: str = "") -> float:
    """Download ``url`` to the file ``dest``; the modification time it should carry."""
    import urllib.request  # only a build with ADD of a URL needs the HTTP modules

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp, open(dest, "wb") as out:
            while chunk := resp.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            modified = resp.headers.get("Last-Modified")
    except OSError as e:
        raise FetchError(f"{url}: {getattr(e, 'reason', None) or e}") from None
    if checksum and checksum != "sha256:" + h.hexdigest():
        raise FetchError(f"{url}: checksum mismatch: want {checksum}, got sha256:{h.hexdigest()}")
    mtime = 0.0
    if modified:
        try:
            mtime = email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            mtime = 0.0
    os.chmod(dest, 0o600)
    if mtime:
        os.utime(dest, (mtime, mtime))
    return mtime


def archive_kind(path: Path) -> str:
    """"gzip", "bzip2", "xz", "zstd" or "tar" for an archive ADD extracts; "" otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except (IsADirectoryError, PermissionError):
        return ""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return ""


def extract_archive(path: Path, kind: str, dest: Path, scratch: Path) -> None:
    """Extract the archive at ``path`` into the new directory ``dest``."""
    os.mkdir(dest, 0o700)
    if kind in ("bzip2", "xz"):
        plain = scratch / f".{path.name}.tar"
        opener = bz2.open if kind == "bzip2" else lzma.open
        with opener(path, "rb") as src, open(plain, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        path = plain
    with open(path, "rb") as f:
        source: BinaryIO = f
        extract(source, dest, str(path.name))
    if kind in ("bzip2", "xz"):
        path.unlink()


def plan_add(context: ContextTree, sources: list[str], dest: str, workdir: str,
             view: ImageView, scratch: Path, checksum: str,
             owner: tuple[int, int, int | None, bool]) -> list[CopyEntry]:
    """ADD's entries: URLs fetched into ``scratch``, local archives extracted there, other
    sources as COPY plans them. ``owner`` is (uid, gid, mode, whether --chown was given)."""
    uid, gid, mode, chowned = owner
    several = len(sources) > 1 or any(c in s for s in sources for c in "*?[")
    dest_abs = os.path.join(workdir, dest)
    if several and not dest.endswith("/") and not view.is_dir(dest_abs):
        raise CopyError(f"{dest}: with several sources the destination must be a "
                        "directory and end with /")
    if several:
        dest = dest.rstrip("/") + "/"
    entries: list[CopyEntry] = []
    for i, source in enumerate(sources):
        if is_url(source):
            base = url_basename(source)
            if not base and (dest.endswith("/") or view.is_dir(dest_abs)):
                raise CopyError(f"{source}: cannot tell a file name from the URL")
            folder = scratch / f"url-{i}"
            folder.mkdir()
            fetch_url(source, folder / (base or "download"), checksum)
            entries += plan_copy(ContextTree(folder, IgnoreRules([])), [base or "download"],
                                 dest, workdir, view, uid=uid, gid=gid, mode=mode)
            continue
        if checksum:
            raise CopyError("--checksum is only for URL sources")
        for rel in expand_sources(context, source) or [source]:
            found = context.lstat(rel, follow=True)
            kind = archive_kind(Path(found[0])) if found is not None else ""
            if not kind:
                entries += plan_copy(context, [rel], dest, workdir, view,
                                     uid=uid, gid=gid, mode=mode)
                continue
            assert found is not None
            folder = scratch / f"archive-{i}-{len(entries)}"
            extract_archive(Path(found[0]), kind, folder, scratch)
            # An archive's own owners stay unless --chown says otherwise, as in Docker.
            entries += plan_copy(ContextTree(folder, IgnoreRules([])), ["."],
                                 dest.rstrip("/") + "/", workdir, view,
                                 uid=uid if chowned else None,
                                 gid=gid if chowned else None, mode=mode)
    return entries
