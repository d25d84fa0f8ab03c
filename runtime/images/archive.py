"""Images in and out of files: ``import`` a rootfs tarball, ``load`` and ``save`` archives.

- import: a root filesystem tar (plain or gzip) becomes a one-layer image, like
  ``docker import``.
- load: an OCI archive (a tar of an OCI image layout) or a ``docker save`` archive
  (``manifest.json`` with ``RepoTags``); an OCI index in it is resolved to the
  host's platform.
- save: an OCI archive that also carries Docker's ``manifest.json``, so both
  ``podium image load`` and ``docker load`` read it.

Archive members are only ever read, never extracted to disk by name, and every
layer is unpacked (so checked) before any name points at it: a bad archive leaves
no name behind, and its unnamed blobs go at the next prune.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from runtime.images import layers as _layers
from runtime.images.digest import CHUNK, HashingReader, digest_bytes, digest_file, hex_of
from runtime.images.errors import ArchiveError, ContentError
from runtime.images.oci import (
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    canonical_json,
    host_platform,
    kind_of,
    load_json,
    manifest_json,
    parse_index,
    parse_manifest,
    select_platform,
)
from runtime.images.reference import parse_reference
from runtime.images.store import ImageStore
from runtime.images.unpack import unpack_layer

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERD_NAME = "io.containerd.image.name"


def import_rootfs(
    store: ImageStore, tarball: Path, name: str, config: dict[str, Any] | None = None
) -> str:
    """Make ``tarball`` a one-layer image called ``name``; the canonical name.

    ``config`` adds to the image's ``config`` section (``{"Cmd": ["sh"]}``).
    """
    ref = parse_reference(name)
    with store.writing():
        with open(tarball, "rb") as f:
            blob_digest, size = digest_file(f)
            f.seek(0)
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            diff_id = _diff_id(f)
        layer_dir = store.layer_path(diff_id)
        if not layer_dir.is_dir():  # unpacking first checks the tar before anything is stored
            with open(tarball, "rb") as f, _layers.layer_lock(store, diff_id):
                if not layer_dir.is_dir():
                    unpack_layer(f, layer_dir, str(tarball), expected_diff_id=diff_id)
        with open(tarball, "rb") as f:
            _copy_blob(store, f, blob_digest, f"layer {tarball}")
        platform = host_platform()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        image_config: dict[str, Any] = {
            "created": created, "architecture": platform.architecture, "os": platform.os,
            "config": {"Env": [DEFAULT_PATH], **(config or {})},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": f"podium image import {tarball.name}"}],
        }
        if platform.variant:
            image_config["variant"] = platform.variant
        config_bytes = canonical_json(image_config)
        layer = Descriptor(OCI_LAYER_GZIP if gzipped else OCI_LAYER, blob_digest, size)
        return _name_image(store, str(ref), config_bytes, [layer])


def load_archive(store: ImageStore, archive: Path, name: str | None = None) -> list[str]:
    """Load every image of an OCI or ``docker save`` archive; the names (or digests) stored.

    ``name`` names an image whose archive entry carries only a tag, or none at all.
    """
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise ArchiveError(f"{archive}: not a tar archive: {e}") from None
    with tar, store.writing():
        reader = _ArchiveReader(tar, archive)
        try:
            if reader.has("index.json"):
                return _load_oci(store, reader, name)
            if reader.has("manifest.json"):
                return _load_docker(store, reader, name)
        except (tarfile.TarError, EOFError) as e:
            raise ArchiveError(f"{archive}: corrupt archive: {e}") from None
    raise ArchiveError(f"{archive}: neither an OCI archive (index.json) nor a docker save "
                       "archive (manifest.json)")


def save_archive(store: ImageStore, names: list[str], archive: Path) -> None:
    """Write ``names`` to ``archive`` as an OCI archive (with Docker's manifest.json too)."""
    entries, docker_manifest, blobs = [], [], []
    for name in names:
        digest = store.resolve(name)
        ref_name = str(parse_reference(name)) if not name.startswith("sha256:") else ""
        manifest = store.manifest(digest)
        annotations = {REF_NAME: ref_name, CONTAINERD_NAME: ref_name} if ref_name else {}
        entries.append(Descriptor(manifest.media_type, digest,
                                  store.blob_path(digest).stat().st_size,
                                  annotations=annotations).to_json())
        blobs += [digest, manifest.config.digest] + [layer.digest for layer in manifest.layers]
        docker_manifest.append({
            "Config": f"blobs/sha256/{hex_of(manifest.config.digest)}",
            "RepoTags": [parse_reference(name).familiar] if ref_name else [],
            "Layers": [f"blobs/sha256/{hex_of(layer.digest)}" for layer in manifest.layers],
        })
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": entries}
    tmp = archive.with_name(f".{archive.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add_bytes(tar, "index.json", json.dumps(index, indent=2).encode())
            _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
            _add_dir(tar, "blobs")
            _add_dir(tar, "blobs/sha256")
            for digest in dict.fromkeys(blobs):
                info = tarfile.TarInfo(f"blobs/sha256/{hex_of(digest)}")
                info.size = store.blob_path(digest).stat().st_size
                info.mode = 0o644
                with open(store.blob_path(digest), "rb") as f:
                    tar.addfile(info, f)
        os.rename(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _ArchiveReader:
    """Members of an archive by their normalised name ("./x" and "x" alike)."""

    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self.tar = tar
        self.path = path
        self.members = {m.name.removeprefix("./"): m for m in tar.getmembers()}

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> BinaryIO:
        member = self.members.get(name.removeprefix("./"))
        stream = self.tar.extractfile(member) if member is not None else None
        if stream is None:
            raise ArchiveError(f"{self.path}: no file {name!r} in the archive")
        return cast(BinaryIO, stream)

    def read(self, name: str) -> bytes:
        return self.open(name).read()

    def blob(self, digest: str) -> str:
        return f"blobs/sha256/{hex_of(digest)}"


def _load_oci(store: ImageStore, reader: _ArchiveReader, name: str | None) -> list[str]:
    index = parse_index(reader.read("index.json"), f"{reader.path}: index.json")
    loaded = []
    for entry in index.manifests:
        descriptor = entry
        if descriptor.media_type in INDEX_TYPES:
            inner = parse_index(reader.read(reader.blob(descriptor.digest)),
                                f"{reader.path}: index {descriptor.digest}")
            descriptor = select_platform(inner, host_platform(), f"{reader.path}")
        manifest_bytes = reader.read(reader.blob(descriptor.digest))
        manifest = parse_manifest(manifest_bytes, f"{reader.path}: {descriptor.digest}")
        ref_name = _oci_entry_name(entry, name, reader.path)
        config_bytes = reader.read(reader.blob(manifest.config.digest))
        for layer in manifest.layers:
            _copy_blob(store, reader.open(reader.blob(layer.digest)), layer.digest,
                       f"{reader.path}: layer {layer.digest}")
        _check(digest_bytes(config_bytes), manifest.config.digest, reader.path)
        store.put_blob(config_bytes, manifest.config.digest)
        digest = store.put_blob(manifest_bytes, descriptor.digest)
        _layers.lower_dirs(store, digest)
        media_type = kind_of(manifest_bytes, descriptor.media_type)
        size = len(manifest_bytes)
        loaded.append(store.set_name(ref_name, Descriptor(media_type, digest, size))
                      if ref_name else digest)
    return loaded


def _load_docker(store: ImageStore, reader: _ArchiveReader, name: str | None) -> list[str]:
    try:
        entries = json.loads(reader.read("manifest.json"))
        assert isinstance(entries, list)
    except (ValueError, AssertionError):
        raise ArchiveError(f"{reader.path}: manifest.json is not a JSON list") from None
    loaded = []
    for i, entry in enumerate(entries):
        where = f"{reader.path}: manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
            raise ArchiveError(f"{where}: needs Config and Layers")
        config_bytes = reader.read(str(entry.get("Config")))
        load_json(config_bytes, f"{where}: Config")
        layers = []
        for path in entry["Layers"]:
            stream = reader.open(str(path))
            digest, size = digest_file(stream)
            stream = reader.open(str(path))
            gzipped = stream.read(2) == b"\x1f\x8b"
            _copy_blob(store, reader.open(str(path)), digest, f"{where}: layer {path}")
            layers.append(Descriptor(OCI_LAYER_GZIP if gzipped else OCI_LAYER, digest, size))
        tags = [str(t) for t in entry.get("RepoTags") or []] or ([name] if name else [])
        first = _name_image(store, tags[0] if tags else None, config_bytes, layers)
        loaded.append(first)
        for tag in tags[1:]:
            loaded.append(store.tag(first, tag))
    return loaded


def _name_image(
    store: ImageStore, name: str | None, config_bytes: bytes, layers: list[Descriptor]
) -> str:
    """Store config and manifest, unpack the layers, then name the image (last)."""
    config = Descriptor(OCI_CONFIG, store.put_blob(config_bytes), len(config_bytes))
    manifest_bytes = manifest_json(config, layers)
    digest = store.put_blob(manifest_bytes)
    _layers.lower_dirs(store, digest)
    if name is None:
        return digest
    return store.set_name(name, Descriptor(OCI_MANIFEST, digest, len(manifest_bytes)))


def _oci_entry_name(entry: Descriptor, name: str | None, path: Path) -> str | None:
    if name:
        return name
    full = entry.annotations.get(CONTAINERD_NAME) or entry.annotations.get(REF_NAME)
    if not full:
        return None
    if "/" not in full and ":" not in full and "@" not in full:
        raise ArchiveError(f"{path}: the image {entry.digest} is named only {full!r} (a "
                           "tag): give a name to load it under")
    return full


def _copy_blob(store: ImageStore, stream: BinaryIO, digest: str, what: str) -> None:
    with store.blob_writer(digest, what) as w:
        if w.done:
            return
        w.restart()
        while chunk := stream.read(CHUNK):
            w.write(chunk)
        w.commit()


def _diff_id(stream: BinaryIO) -> str:
    raw = stream
    head = raw.read(2)
    raw.seek(0)
    source: BinaryIO = cast(BinaryIO, gzip.GzipFile(fileobj=raw)) if head == b"\x1f\x8b" else raw
    hashing = HashingReader(source)
    try:
        hashing.drain()
    except (OSError, EOFError) as e:
        raise ArchiveError(f"not a readable tar or gzip file: {e}") from None
    return hashing.digest


def _check(actual: str, expected: str, path: Path) -> None:
    if actual != expected:
        raise ContentError(f"{path}: blob {expected} has digest {actual}")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)

