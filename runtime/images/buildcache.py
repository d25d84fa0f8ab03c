"""The build step cache: what a step made, found again by what the step was.

A step's key chains its parent's key with what the step is, after substitution:

    key(step) = sha256(parent key, instruction text, extra)

where the first parent is the base image's manifest digest (or ``scratch``), and
``extra`` holds what the text alone does not say: for RUN the environment, user,
directory and network it runs with; for COPY and ADD a digest of the source
files' names, types, modes, owners and contents. Equal keys mean equal images so
far, so the step's result can be reused: its layer (blob and diff id), or nothing
for a step that only changes the config, and the time it was first made, so a
rebuild with no change yields the very same image digest.

The index is one small JSON file in the store, ``build-cache.json``, rewritten
atomically under ``locks/build-cache.lock``. An entry whose layer blob is gone
(``prune`` removed it) is a miss; the oldest entries go beyond ``MAX_ENTRIES``.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from runtime.images.blobs import write_atomic
from runtime.images.digest import digest_bytes
from runtime.images.lock import locked
from runtime.images.oci import Descriptor
from runtime.images.store import ImageStore

MAX_ENTRIES = 10000
SCRATCH_KEY = "scratch"


class CacheEntry(NamedTuple):
    created: str  # RFC 3339, when the step first ran
    layer: Descriptor | None = None  # None: the step changed only the config
    diff_id: str = ""


def step_key(parent: str, text: str, extra: str = "") -> str:
    return digest_bytes(json.dumps([parent, text, extra]).encode())


class BuildCache:
    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.path = store.root / "build-cache.json"
        self.lock_path = store.locks_dir / "build-cache.lock"
        self._entries = self._read()

    def get(self, key: str) -> CacheEntry | None:
        doc = self._entries.get(key)
        if not isinstance(doc, dict):
            return None
        try:
            layer = doc.get("layer")
            entry = CacheEntry(
                created=str(doc["created"]),
                layer=Descriptor(str(layer["mediaType"]), str(layer["digest"]),
                                 int(layer["size"])) if layer else None,
                diff_id=str(doc.get("diff_id") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if entry.layer is not None and not (self.store.has_blob(entry.layer.digest)
                                            and entry.diff_id):
            return None
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        doc: dict[str, Any] = {"created": entry.created, "used": time.time()}
        if entry.layer is not None:
            doc["layer"] = entry.layer.to_json()
            doc["diff_id"] = entry.diff_id
        with locked(self.lock_path):
            entries = self._read()  # another build may have added entries meanwhile
            entries[key] = doc
            if len(entries) > MAX_ENTRIES:
                oldest = sorted(entries, key=lambda k: _used(entries[k]))
                for stale in oldest[: len(entries) - MAX_ENTRIES]:
                    del entries[stale]
            write_atomic(self.path, json.dumps(entries, sort_keys=True).encode())
        self._entries = entries

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}


def _used(doc: Any) -> float:
    try:
        return float(doc.get("used", 0)) if isinstance(doc, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0
