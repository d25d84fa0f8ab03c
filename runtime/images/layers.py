"""Unpacked layers: one directory per diff id, made once, shared by every image using it.

A container's root filesystem is an overlay of these directories (read-only lower
dirs) under its own upper dir; ``lower_dirs`` gives them in overlayfs' order, the
top layer first.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.images.digest import hex_of
from runtime.images.errors import ImageNotFound, ManifestError
from runtime.images.lock import locked
from runtime.images.oci import Descriptor, parse_config, parse_manifest
from runtime.images.unpack import remove_tree, unpack_layer

if TYPE_CHECKING:
    from runtime.images.store import ImageStore


@dataclass(frozen=True)
class PruneReport:
    blobs: int  # blobs removed
    layers: int  # unpacked layer directories removed
    bytes: int  # bytes of blobs removed


def lower_dirs(store: ImageStore, manifest_digest: str) -> list[Path]:
    """The unpacked layers of a stored manifest, top first, unpacking any missing one."""
    manifest = parse_manifest(store.read_blob(manifest_digest), f"manifest {manifest_digest}")
    config = parse_config(store.read_blob(manifest.config.digest),
                          f"config {manifest.config.digest}")
    if len(config.diff_ids) != len(manifest.layers):
        raise ManifestError(
            f"manifest {manifest_digest}: {len(manifest.layers)} layers but the config "
            f"lists {len(config.diff_ids)} diff ids"
        )
    paths = [ensure_layer(store, layer, diff_id)
             for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True)]
    return paths[::-1]


def ensure_layer(store: ImageStore, layer: Descriptor, diff_id: str) -> Path:
    """The directory of ``layer`` unpacked, made now if it is not there yet."""
    dest = store.layer_path(diff_id)
    if dest.is_dir():
        return dest
    with layer_lock(store, diff_id):
        if dest.is_dir():  # another process unpacked it while this one waited
            return dest
        if not store.has_blob(layer.digest):
            raise ImageNotFound(f"layer blob {layer.digest} is missing: pull the image again")
        with open(store.blob_path(layer.digest), "rb") as blob:
            unpack_layer(blob, dest, short(layer.digest), expected_diff_id=diff_id)
    return dest


def layer_lock(store: ImageStore, diff_id: str) -> AbstractContextManager[int]:
    """Held while a layer is unpacked, so concurrent users unpack it once."""
    return locked(store.locks_dir / f"layer-{hex_of(diff_id)}.lock")


def sweep(store: ImageStore, keep_blobs: set[str], keep_diff_ids: set[str]) -> PruneReport:
    """Remove what is not kept, with the store's gc and index locks held by the caller."""
    blobs = freed = layers = 0
    keep_hex = {hex_of(d) for d in keep_blobs}
    for path in store.blobs_dir.iterdir():
        if path.name not in keep_hex:
            freed += path.lstat().st_size
            path.unlink()
            blobs += 1
    keep_layers = {hex_of(d) for d in keep_diff_ids}
    for path in store.layers_dir.iterdir():
        if path.name not in keep_layers:
            remove_tree(path)
            if not path.name.startswith(".tmp-"):
                layers += 1
    # No writer runs while gc.lock is held exclusively: what is left here is stale.
    for path in store.ingest_dir.iterdir():
        path.unlink()
    for path in store.locks_dir.iterdir():
        if path.name.startswith(("blob-", "layer-")):
            os.unlink(path)
    return PruneReport(blobs=blobs, layers=layers, bytes=freed)


def short(digest: str) -> str:
    return digest[:19]  # "sha256:" and 12 hex digits, as docker shows IDs
