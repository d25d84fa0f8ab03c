"""The node's image store: content-addressed, an OCI image layout, shared by processes.

    ROOT/                      (default /var/lib/podium/images)
      oci-layout               {"imageLayoutVersion": "1.0.0"}
      index.json               names → manifests (annotation org.opencontainers.image.ref.name)
      blobs/sha256/<hex>       manifests, configs, compressed layers; only verified bytes
      layers/sha256/<hex>      each layer unpacked once, by diff id: overlayfs lower dirs
      holders/<holder>         the manifest digest a holder (a container) uses: a hard
                               link to held/<hex> (no new inode per container)
      held/<hex>               the digest <hex> of an image in use, one file per image
      ingest/  locks/          partial downloads; flock files

ROOT is itself a valid OCI layout, so other tools can read it (``oci:ROOT:NAME``).

Processes (the command line, the agent) share a store through flock:

- ``locks/index.lock`` (exclusive) around every change of index.json or holders/;
- ``locks/gc.lock``: shared while adding content (blobs, layers, then a name),
  exclusive while pruning, so a prune never removes what a pull is about to name;
- one lock per blob and per layer, so concurrent pulls of one image do the work once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.images import layers as _layers
from runtime.images.blobs import BlobWriter, write_atomic
from runtime.images.digest import digest_bytes, hex_of
from runtime.images.errors import ImageInUse, ImageNotFound, ManifestError
from runtime.images.layers import PruneReport
from runtime.images.lock import locked
from runtime.images.oci import (
    INDEX_TYPES,
    OCI_INDEX,
    REF_NAME,
    Descriptor,
    ImageConfig,
    Manifest,
    kind_of,
    parse_config,
    parse_index,
    parse_manifest,
)
from runtime.images.reference import Reference, parse_reference

DEFAULT_ROOT = Path("/var/lib/podium/images")
# A holder's file name: as a container ID (letters, digits, _ . + -; no leading symbol).
_HOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class ImageSummary:
    name: str  # canonical: docker.io/library/busybox:latest
    familiar: str  # as people type it: busybox:latest
    digest: str  # of the manifest
    size: int  # bytes of the config and the compressed layers
    created: str


class ImageStore:
    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.layers_dir = self.root / "layers" / "sha256"
        self.ingest_dir = self.root / "ingest"
        self.locks_dir = self.root / "locks"
        self.index_path = self.root / "index.json"
        self.holders_dir = self.root / "holders"
        self.held_dir = self.root / "held"
        for d in (self.blobs_dir, self.layers_dir, self.ingest_dir, self.locks_dir,
                  self.holders_dir, self.held_dir):
            d.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            write_atomic(layout, b'{"imageLayoutVersion":"1.0.0"}')
        if (self.root / _LEGACY_HOLDERS).exists():
            self._move_legacy_holders()

    # --- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        """A (small) blob's bytes, checked against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(f"blob {digest} is not in the store {self.root}") from None
        if digest_bytes(data) != digest:
            raise ManifestError(f"blob {digest} in {self.root} is corrupt: remove and pull again")
        return data

    def blob_writer(self, digest: str, what: str = "") -> BlobWriter:
        return BlobWriter(self.blobs_dir, self.ingest_dir, self.locks_dir, digest,
                          what or f"blob {digest}")

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (checked against ``digest`` when given); its digest."""
        digest = digest or digest_bytes(data)
        with self.blob_writer(digest) as w:
            if not w.done:
                w.restart()
                w.write(data)
                w.commit()
        return digest

    # --- names -------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold off prune while content is added and named."""
        with locked(self.locks_dir / "gc.lock", exclusive=False):
            yield

    def names(self) -> dict[str, Descriptor]:
        """Every name in the store and the manifest it points to."""
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return {}
        out: dict[str, Descriptor] = {}
        for d in parse_index(data, str(self.index_path)).manifests:
            name = d.annotations.get(REF_NAME)
            if name:
                out[name] = d
        return out

    def set_name(self, name: str | Reference, manifest: Descriptor) -> str:
        """Point ``name`` at a stored manifest (replacing what it pointed to); the name."""
        ref = _ref(name)
        if not self.has_blob(manifest.digest):
            raise ImageNotFound(f"manifest {manifest.digest} is not in the store")
        with locked(self.locks_dir / "index.lock"):
            names = self.names()
            names[str(ref)] = Descriptor(manifest.media_type, manifest.digest, manifest.size)
            self._write_index(names)
        return str(ref)

    def resolve(self, name: str) -> str:
        """The manifest digest ``name`` (a reference or a manifest digest) stands for."""
        if name.startswith("sha256:"):
            if self.has_blob(name):
                return name
            raise ImageNotFound(f"no image with digest {name}")
        ref = _ref(name)
        if ref.digest is not None and self.has_blob(ref.digest):
            return ref.digest
        found = self.names().get(str(ref))
        if found is None:
            raise ImageNotFound(f"image {ref.familiar} not found: pull, load or import it")
        return found.digest

    def manifest(self, name: str) -> Manifest:
        digest = self.resolve(name)
        data = self.read_blob(digest)
        if kind_of(data, "", f"manifest {digest}") in INDEX_TYPES:
            raise ManifestError(f"{name}: {digest} is an index, not one platform's manifest")
        return parse_manifest(data, f"manifest {digest}")

    def image_config(self, name: str) -> ImageConfig:
        """Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, Labels … of ``name``."""
        manifest = self.manifest(name)
        return parse_config(self.read_blob(manifest.config.digest),
                            f"config {manifest.config.digest}")

    def tag(self, source: str, target: str) -> str:
        digest = self.resolve(source)
        media_type = kind_of(self.read_blob(digest), "", f"manifest {digest}")
        return self.set_name(target, Descriptor(media_type, digest,
                                                self.blob_path(digest).stat().st_size))

    def rm(self, name: str) -> str:
        """Remove a name; refused (ImageInUse) if it is the last name of an image in use.

        The blobs and layers stay until ``prune``.
        """
        ref = _ref(name)
        with locked(self.locks_dir / "index.lock"):
            names = self.names()
            d = names.pop(str(ref), None)
            if d is None:
                raise ImageNotFound(f"image {ref.familiar} not found")
            still_named = any(other.digest == d.digest for other in names.values())
            holders = [h for h, dig in self._holders().items() if dig == d.digest]
            if holders and not still_named:
                raise ImageInUse(ref.familiar, sorted(holders))
            self._write_index(names)
        return str(ref)

    # --- in use --------------------------------------------------------------------

    def mark_in_use(self, name: str, holder: str) -> str:
        """Record that ``holder`` (a container ID) uses ``name``; the manifest digest."""
        path = self._holder_path(holder)
        digest = self.resolve(name)
        with locked(self.locks_dir / "index.lock"):
            if _read_holder(path) != digest:  # an adopted container holds it already
                self._link_holder(path, digest)
        return digest

    def release(self, holder: str) -> None:
        """Forget ``holder``'s use of its image (no error if it held none)."""
        path = self._holder_path(holder)
        with locked(self.locks_dir / "index.lock"):
            path.unlink(missing_ok=True)

    def holders(self, name: str) -> list[str]:
        digest = self.resolve(name)
        return sorted(h for h, d in self._holders().items() if d == digest)

    # --- layers and garbage ----------------------------------------------------------

    def layer_path(self, diff_id: str) -> Path:
        return self.layers_dir / hex_of(diff_id)

    def lower_dirs(self, name: str) -> list[Path]:
        """The image's unpacked layers for overlayfs, top layer first (unpacks if needed)."""
        with self.writing():
            return _layers.lower_dirs(self, self.resolve(name))

    def prune(self) -> PruneReport:
        """Remove blobs and layers no name or holder reaches, and partial downloads."""
        with locked(self.locks_dir / "gc.lock"), locked(self.locks_dir / "index.lock"):
            roots = {d.digest for d in self.names().values()} | set(self._holders().values())
            blobs, diff_ids = self._reachable(roots)
            removed = _layers.sweep(self, blobs, diff_ids)
            for entry in os.scandir(self.held_dir):
                if entry.stat().st_nlink == 1:  # no holder links to it any more
                    os.unlink(entry.path)
        return removed

    def _reachable(self, roots: set[str]) -> tuple[set[str], set[str]]:
        blobs: set[str] = set()
        diff_ids: set[str] = set()
        todo = list(roots)
        while todo:
            digest = todo.pop()
            if digest in blobs or not self.has_blob(digest):
                continue
            blobs.add(digest)
            data = self.read_blob(digest)
            if kind_of(data, "", digest) in INDEX_TYPES:
                todo.extend(d.digest for d in parse_index(data, digest).manifests)
                continue
            manifest = parse_manifest(data, digest)
            blobs.add(manifest.config.digest)
            blobs.update(layer.digest for layer in manifest.layers)
            if self.has_blob(manifest.config.digest):
                diff_ids.update(parse_config(self.read_blob(manifest.config.digest)).diff_ids)
        return blobs, diff_ids

    # A holder's file is made at every container start and removed at its removal,
    # under the index lock, so an fsync there would make every start wait on the
    # disk and on each other. One file per holder, so a start adds one name
    # whatever the number of containers: a hard link to the image's held/ file
    # (``_link_holder``). They are not synced, because nothing they hold outlives
    # an OS crash:
    #
    # - A process crash (the agent, the command line) cannot tear one: a held/
    #   file is written to a temp file and renamed, a link is made whole or not
    #   at all, so every reader, then or later, sees the old or the new file whole.
    # - An OS crash may leave files missing, left over, empty or with zeroed blocks,
    #   as the filesystem kept of the unsynced writes. But every holder is a
    #   container, none survives an OS crash, and one started after it records
    #   itself here before its layers are used. So whatever came back names only
    #   dead holders (as synced files would: all they held were the containers of
    #   then), and a file that is not a digest is read as holding nothing.
    def _holder_path(self, holder: str) -> Path:
        if not _HOLDER.fullmatch(holder):
            raise ValueError(f"holder {holder!r} is not a container ID (letters, digits "
                             "and _ . + -, not starting with a symbol)")
        return self.holders_dir / holder

    # A file of its own per holder would be an inode per container start, and
    # allocating one is not free: ext4 without a journal looks past every inode
    # freed in the last minutes, which cost 0.7 ms a start here, and more after each
    # burst of deletions. So every holder of an image is a hard link to one file,
    # held/<hex>, made once; its content, the digest, is read through any name.
    def _link_holder(self, path: Path, digest: str) -> None:
        """Under the index lock: ``path`` becomes a name of the image's held/ file."""
        pin = self.held_dir / hex_of(digest)
        if _read_holder(pin) != digest:  # none yet, or one an OS crash left torn
            write_atomic(pin, digest.encode(), sync=False)  # a new inode: links to
            #                                                 the old one keep it
        try:
            os.link(pin, path)
        except FileExistsError:  # a file naming another image, or a torn one
            replacement = path.with_name(f".{path.name}.link")
            replacement.unlink(missing_ok=True)
            os.link(pin, replacement)
            os.replace(replacement, path)

    def _holders(self) -> dict[str, str]:
        found = {}
        for entry in os.scandir(self.holders_dir):
            if _HOLDER.fullmatch(entry.name):  # not a temp file of write_atomic
                digest = _read_holder(Path(entry.path))
                if digest:
                    found[entry.name] = digest
        return found

    def _move_legacy_holders(self) -> None:
        """Stores before holders/ kept every holder in one holders.json: its holders
        get files of their own (so their containers keep their images), then it goes."""
        legacy = self.root / _LEGACY_HOLDERS
        with locked(self.locks_dir / "index.lock"):
            try:
                doc: Any = json.loads(legacy.read_bytes())
            except FileNotFoundError:
                return  # another process moved them meanwhile
            except ValueError:  # torn by an OS crash: no holder of it is alive
                doc = {}
            for holder, digest in (doc.items() if isinstance(doc, dict) else ()):
                if _HOLDER.fullmatch(str(holder)) and str(digest).startswith("sha256:"):
                    write_atomic(self.holders_dir / str(holder), str(digest).encode(),
                                 sync=False)
            legacy.unlink()

    def _write_index(self, names: dict[str, Descriptor]) -> None:
        manifests = []
        for name, d in sorted(names.items()):
            entry = d.to_json()
            entry["annotations"] = {REF_NAME: name}
            manifests.append(entry)
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        write_atomic(self.index_path, json.dumps(doc, indent=2).encode() + b"\n")

    # Last in the class: within the class body the name shadows the builtin ``list``.
    def list(self) -> list[ImageSummary]:
        out = []
        for name, d in sorted(self.names().items()):
            try:
                manifest = self.manifest(d.digest)
                created = self.image_config(d.digest).created
                size = manifest.config.size + sum(layer.size for layer in manifest.layers)
            except (ImageNotFound, ManifestError):
                created, size = "", 0
            out.append(ImageSummary(name=name, familiar=parse_reference(name).familiar,
                                    digest=d.digest, size=size, created=created))
        return out


def _ref(name: str | Reference) -> Reference:
    return name if isinstance(name, Reference) else parse_reference(name)


_LEGACY_HOLDERS = "holders.json"


def _read_holder(path: Path) -> str:
    """The digest a holder's file records; "" for none, or for a file an OS crash
    left torn (see ``ImageStore._holders``)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text if text.startswith("sha256:") and len(text) == 71 else ""
