"""COPY and ADD: which files go where, and the layer that puts them there.

``plan_copy`` turns the (already substituted) sources and destination into a list
of ``CopyEntry`` — where each file lands in the image and with which owner and
mode — following Docker's rules:

- sources are relative to the build context (or an earlier stage's root with
  ``--from``), may use ``*``, ``?`` and ``[...]``, and never leave it; what
  ``.dockerignore`` excludes is not there;
- a directory source copies its contents, not itself;
- the destination is relative to WORKDIR; with several sources (or a wildcard) it
  must end in ``/``; a file goes *into* a destination that ends in ``/`` or is a
  directory in the image, else it *becomes* the destination;
- owners are 0:0 unless ``--chown``; ``--chmod`` sets the mode of what is copied;
- symlinks in the image's directories are followed inside the image.

``entries_digest`` hashes the plan (paths, types, modes, owners, contents) for the
step cache; ``write_copy_layer`` writes the layer tar, with every parent directory
carrying the mode and owner it has in the image, so a COPY into ``/tmp`` keeps
``/tmp`` at 1777.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
from pathlib import Path
from typing import NamedTuple, Protocol

from runtime.images.digest import CHUNK
from runtime.images.dockerignore import IgnoreRules
from runtime.images.imageview import ImageView
from runtime.images.layerdiff import LayerWriter

_GLOB = frozenset("*?[")


class CopyError(ValueError):
    """A COPY or ADD that cannot be done; the message names the source or destination."""


class CopyEntry(NamedTuple):
    target: str  # relative path in the image ('usr/local/bin/app'), parents resolved
    source: str  # host path to read (not followed)
    st: os.stat_result
    uid: int | None = None  # None: keep the source's
    gid: int | None = None
    mode: int | None = None


class SourceTree(Protocol):
    def lstat(self, rel: str, follow: bool) -> tuple[str, os.stat_result] | None: ...
    def listdir(self, rel: str) -> list[str]: ...
    def excluded(self, rel: str) -> bool: ...
    def may_include_below(self, rel: str) -> bool: ...


class ContextTree:
    """The build context directory, with its .dockerignore rules."""

    def __init__(self, root: Path, rules: IgnoreRules) -> None:
        self.root = os.path.realpath(root)
        self.rules = rules

    def lstat(self, rel: str, follow: bool) -> tuple[str, os.stat_result] | None:
        path = os.path.join(self.root, rel) if rel else self.root
        parent = os.path.realpath(os.path.dirname(path)) if rel else self.root
        if rel:
            path = os.path.join(parent, os.path.basename(path))
        if follow:
            path = os.path.realpath(path)
        if path != self.root and not path.startswith(self.root + os.sep):
            raise CopyError(f"{rel}: leads outside the build context")
        try:
            return path, os.lstat(path)
        except FileNotFoundError:
            return None

    def listdir(self, rel: str) -> list[str]:
        found = self.lstat(rel, follow=True)
        return sorted(os.listdir(found[0])) if found is not None else []

    def excluded(self, rel: str) -> bool:
        return self.rules.excluded(rel)

    def may_include_below(self, rel: str) -> bool:
        return self.rules.may_include_below(rel)


class ViewTree:
    """An earlier stage's image, for ``COPY --from``."""

    def __init__(self, view: ImageView) -> None:
        self.view = view

    def lstat(self, rel: str, follow: bool) -> tuple[str, os.stat_result] | None:
        if not rel:
            return (self.view.layers[0], os.lstat(self.view.layers[0])) if self.view.layers \
                else None
        found = self.view.lookup(self.view.resolve(rel, follow_last=follow))
        return (found.path, found.st) if found is not None else None

    def listdir(self, rel: str) -> list[str]:
        return self.view.listdir(self.view.resolve(rel))

    def excluded(self, rel: str) -> bool:
        return False

    def may_include_below(self, rel: str) -> bool:
        return False


def clean_source(source: str) -> str:
    """A source path relative to its tree's root ('' for the root itself); CopyError if it
    would climb out. An absolute source is relative to the tree's root, as in Docker."""
    norm = posixpath.normpath(source) if source else "."
    if norm == ".." or norm.startswith("../"):
        raise CopyError(f"{source}: forbidden path outside the build context")
    return posixpath.normpath("/" + norm).lstrip("/")


def expand_sources(tree: SourceTree, source: str) -> list[str]:
    """The tree's paths a source names (a wildcard may name several, or none)."""
    rel = clean_source(source)
    if not any(c in _GLOB for c in rel):
        return [rel] if not rel or not tree.excluded(rel) else []
    matches = [""]
    for part in rel.split("/"):
        following: list[str] = []
        for base in matches:
            if any(c in _GLOB for c in part):
                names = [n for n in tree.listdir(base) if fnmatch.fnmatchcase(n, part)]
            else:
                names = [part]
            following += [f"{base}/{n}" if base else n for n in names]
        matches = following
    return [m for m in matches if tree.lstat(m, follow=False) is not None and
            not tree.excluded(m)]


def plan_copy(
    tree: SourceTree, sources: list[str], dest: str, workdir: str, view: ImageView,
    *, uid: int | None = 0, gid: int | None = 0, mode: int | None = None,
) -> list[CopyEntry]:
    """Every file system object a COPY puts into the image, in no particular order."""
    expanded: list[tuple[str, str]] = []  # (source as written, path in the tree)
    wildcard = False
    for source in sources:
        wildcard = wildcard or any(c in _GLOB for c in source)
        matched = expand_sources(tree, source)
        if not matched and not any(c in _GLOB for c in source):
            raise CopyError(f"{source}: not found in the build context (or excluded by "
                            ".dockerignore)")
        expanded += [(source, rel) for rel in matched]
    if not expanded:
        raise CopyError(f"no source files were specified (nothing matches "
                        f"{' '.join(sources)})")
    dest_abs = posixpath.join(workdir or "/", dest)
    into_dir = dest.endswith("/") or dest.endswith("/.") or dest in (".", "")
    if (len(expanded) > 1 or wildcard) and not into_dir and not view.is_dir(dest_abs):
        raise CopyError(f"{dest}: with several sources the destination must be a directory "
                        "and end with /")
    into_dir = into_dir or view.is_dir(dest_abs)
    dest_rel = view.resolve(dest_abs)
    entries: list[CopyEntry] = []
    for _source, rel in expanded:
        found = tree.lstat(rel, follow=True)
        if found is None:
            raise CopyError(f"{rel}: not found in the build context")
        path, st = found
        if stat.S_ISDIR(st.st_mode):
            for sub, sub_path, sub_st in _walk(tree, rel):
                entries.append(CopyEntry(_join(dest_rel, sub), sub_path, sub_st, uid, gid, mode))
            continue
        base = posixpath.basename(rel)
        target = _join(dest_rel, base) if into_dir else dest_rel
        if not target:
            raise CopyError(f"{dest}: cannot replace the image's root with a file")
        entries.append(CopyEntry(target, path, st, uid, gid, mode))
    return _resolve_parents(entries, view)


def _walk(tree: SourceTree, rel: str) -> list[tuple[str, str, os.stat_result]]:
    """(path below ``rel``, host path, stat) for everything below a directory, parents first."""
    out: list[tuple[str, str, os.stat_result]] = []
    for name in tree.listdir(rel):
        child = f"{rel}/{name}" if rel else name
        found = tree.lstat(child, follow=False)
        if found is None:
            continue
        path, st = found
        below = child[len(rel):].lstrip("/")
        is_dir = stat.S_ISDIR(st.st_mode)
        if tree.excluded(child):
            if is_dir and tree.may_include_below(child):
                inner = _walk(tree, child)
                if inner:  # an excluded directory holding re-included files is made
                    out.append((below, path, st))
                    out += [(f"{below}/{s}", p, t) for s, p, t in inner]
            continue
        out.append((below, path, st))
        if is_dir:
            out += [(f"{below}/{s}", p, t) for s, p, t in _walk(tree, child)]
    return out


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}".strip("/") if base else rel.strip("/")


def _resolve_parents(entries: list[CopyEntry], view: ImageView) -> list[CopyEntry]:
    """Follow the image's symlinks in each target's parents (a copied dir onto /bin → usr/bin)."""
    cache: dict[str, str] = {}
    out = []
    for e in entries:
        parent, name = posixpath.split(e.target)
        if parent not in cache:
            cache[parent] = view.resolve("/" + parent) if parent else ""
        out.append(e._replace(target=_join(cache[parent], name)))
    return out


def entries_digest(entries: list[CopyEntry]) -> str:
    """What the cache key needs to know of a COPY: names, types, modes, owners, contents."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.target):
        st = e.st
        mode = e.mode if e.mode is not None else stat.S_IMODE(st.st_mode)
        uid = e.uid if e.uid is not None else st.st_uid
        gid = e.gid if e.gid is not None else st.st_gid
        h.update(f"{e.target}\0{stat.S_IFMT(st.st_mode)}\0{mode:o}\0{uid}:{gid}\0".encode())
        if stat.S_ISREG(st.st_mode):
            with open(e.source, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        elif stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(e.source).encode())
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            h.update(str(st.st_rdev).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def write_copy_layer(writer: LayerWriter, entries: list[CopyEntry], view: ImageView,
                     new_dirs: tuple[str, ...] = (), new_dir_owner: tuple[int, int] = (0, 0),
                     mtime: float = 0.0) -> None:
    """Write ``entries`` and ``new_dirs`` (made 0755) to ``writer``, each with its parent
    directories as the image has them (or made 0755 where it has none)."""
    by_target: dict[str, CopyEntry] = {}
    for e in entries:
        by_target[e.target] = e  # a later source wins, as with cp
    parents: set[str] = set(new_dirs)
    for target in [*by_target, *new_dirs]:
        parent = posixpath.dirname(target)
        while parent:
            parents.add(parent)
            parent = posixpath.dirname(parent)
    for name in sorted(parents | set(by_target), key=lambda p: p.split("/")):
        entry = by_target.get(name)
        if entry is not None:
            writer.add_path(name, entry.source, entry.st, uid=entry.uid, gid=entry.gid,
                            mode=entry.mode)
            continue
        existing = view.stat("/" + name)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            writer.add_dir(name, stat.S_IMODE(existing.st_mode), existing.st_uid,
                           existing.st_gid, existing.st_mtime)
        else:
            writer.add_dir(name, 0o755, new_dir_owner[0], new_dir_owner[1], mtime)


def missing_dirs(view: ImageView, path: str) -> list[str]:
    """The components of the absolute ``path`` the image lacks (for WORKDIR), top first."""
    rel = view.resolve(path)
    out = []
    parts = rel.split("/") if rel else []
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1])
        if view.lookup(prefix) is None:
            out.append(prefix)
    return out
