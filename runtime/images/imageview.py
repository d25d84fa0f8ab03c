"""Reading an image's merged file tree from its unpacked layers, without mounting it.

The builder needs to look into the image it is building: does the WORKDIR exist,
is a COPY destination a directory, what does ``/etc/passwd`` say about the USER,
what does an earlier stage hold for ``COPY --from``. ``ImageView`` answers as
overlayfs would, from the layer directories (top first): a whiteout (a character
device 0/0) hides a path, an opaque directory hides what the layers below hold
under it, and a file in an upper layer hides a directory below. Symlinks are
resolved inside the image's root, never towards the host's.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path
from typing import NamedTuple

from runtime.images.unpack import OPAQUE_XATTR

MAX_SYMLINKS = 40


class Found(NamedTuple):
    path: str  # the host path of the object, in one of the layer directories
    st: os.stat_result


class ImageView:
    def __init__(self, layers: list[Path]) -> None:
        self.layers = [str(p) for p in layers]  # top first, as overlayfs' lowerdir

    def lookup(self, rel: str) -> Found | None:
        """The object at ``rel`` (relative, '/'-separated, already resolved), or None."""
        rel = rel.strip("/")
        if not rel:
            return None
        parts = rel.split("/")
        for layer in self.layers:
            cur = layer
            hidden_below = False
            for i, part in enumerate(parts):
                cur = os.path.join(cur, part)
                try:
                    st = os.lstat(cur)
                except FileNotFoundError:
                    break
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None  # a whiteout
                if i == len(parts) - 1:
                    return Found(cur, st)
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a non-directory here hides the layers' directory below
                if _opaque(cur):
                    hidden_below = True
            if hidden_below:
                return None
        return None

    def resolve(self, path: str, follow_last: bool = True) -> str:
        """``path`` (absolute in the image) with symlinks resolved inside the image.

        Returns a relative, '/'-separated path ('' for the root); components that do
        not exist are kept as they are.
        """
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            found = self.lookup(candidate)
            if found is not None and stat.S_ISLNK(found.st.st_mode) and (todo or follow_last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise OSError(f"too many levels of symbolic links at /{candidate}")
                target = os.readlink(found.path)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            done.append(part)
        return "/".join(done)

    def stat(self, path: str) -> os.stat_result | None:
        """lstat of ``path`` after resolving symlinks in its parents (not the last)."""
        found = self.lookup(self.resolve(path, follow_last=False))
        return found.st if found is not None else None

    def is_dir(self, path: str) -> bool:
        found = self.lookup(self.resolve(path))
        return found is not None and stat.S_ISDIR(found.st.st_mode)

    def read_file(self, path: str) -> bytes | None:
        found = self.lookup(self.resolve(path))
        if found is None or not stat.S_ISREG(found.st.st_mode):
            return None
        with open(found.path, "rb") as f:
            return f.read()

    def listdir(self, rel: str) -> list[str]:
        """Names in the merged directory ``rel`` (resolved, relative)."""
        parts = [p for p in rel.strip("/").split("/") if p]
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in self.layers:
            cur = layer
            present = True
            last_layer = False
            for part in parts:
                cur = os.path.join(cur, part)
                try:
                    st = os.lstat(cur)
                except FileNotFoundError:
                    present = False
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return sorted(names)  # a whiteout or a file hides the layers below
                if _opaque(cur):
                    last_layer = True
            if present:
                with os.scandir(cur) as it:
                    for entry in it:
                        if entry.name in hidden or entry.name in names:
                            continue
                        est = entry.stat(follow_symlinks=False)
                        if stat.S_ISCHR(est.st_mode) and est.st_rdev == 0:
                            hidden.add(entry.name)
                        else:
                            names.add(entry.name)
            if last_layer:
                break
        return sorted(names)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def parse_passwd_user(view: ImageView, user: str) -> tuple[int, int, tuple[int, ...]]:
    """uid, gid and supplementary gids for a USER value (``name``, ``uid``, ``a:b``)."""
    name, _, group = user.partition(":")
    passwd = _table(view, "/etc/passwd")
    groups = _table(view, "/etc/group")
    uid: int | None = None
    gid: int | None = None
    user_name = ""
    for fields in passwd:
        if len(fields) >= 4 and (fields[0] == name or fields[2] == name):
            user_name = fields[0]
            uid, gid = _int(fields[2]), _int(fields[3])
            break
    if uid is None:
        if not name.isdigit():
            raise LookupError(f"user {name!r} is not in the image's /etc/passwd")
        uid, gid = int(name), 0
    if group:
        gid = None
        for fields in groups:
            if len(fields) >= 3 and (fields[0] == group or fields[2] == group):
                gid = _int(fields[2])
                break
        if gid is None:
            if not group.isdigit():
                raise LookupError(f"group {group!r} is not in the image's /etc/group")
            gid = int(group)
    extra = tuple(sorted({
        _int(fields[2]) for fields in groups
        if len(fields) >= 4 and user_name and user_name in fields[3].split(",")
        and fields[2].isdigit() and _int(fields[2]) != gid
    })) if not group else ()
    return uid, gid or 0, extra


def _table(view: ImageView, path: str) -> list[list[str]]:
    data = view.read_file(path)
    if data is None:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines()
            if line and not line.startswith("#")]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def normalize_abs(path: str) -> str:
    """An absolute, clean path ('/a/b') for an image path."""
    return posixpath.normpath("/" + path.lstrip("/"))
