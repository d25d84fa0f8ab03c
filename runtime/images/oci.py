"""OCI and Docker image documents: manifests, indexes, configs, as one internal form.

Both families are read (a registry or a ``docker save`` archive may hold either);
what podium writes is OCI. Each document is converted from JSON in one function and
checked there, and every error names the document and the field.
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any, cast

from runtime.images.digest import check_digest
from runtime.images.errors import ManifestError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
LAYER_TYPES = (
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os,
                               "architecture": self.platform.architecture}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """What a container needs from the image, and the layers' uncompressed digests."""

    entrypoint: list[str] | None
    cmd: list[str] | None
    env: list[str]
    working_dir: str
    user: str
    exposed_ports: list[str]
    labels: dict[str, str]
    stop_signal: str
    platform: Platform
    created: str
    diff_ids: tuple[str, ...]


def host_platform() -> Platform:
    """This machine's platform in OCI's words (``linux/amd64``, ``linux/arm/v7``)."""
    machine = _platform.machine().lower()
    arch, variant = _ARCHES.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


_ARCHES = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "i686": ("386", ""), "i386": ("386", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""), "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{what}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what}: not a JSON object")
    return doc


def kind_of(data: bytes, hint: str = "", what: str = "manifest") -> str:
    """The media type of a manifest or index: its own field, else ``hint``, else a guess."""
    doc = load_json(data, what)
    media_type = doc.get("mediaType") or hint
    if not media_type or media_type in ("application/json", "text/plain"):
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES + INDEX_TYPES:
        raise ManifestError(f"{what}: unknown media type {media_type!r}")
    return str(media_type)


def parse_manifest(data: bytes, what: str = "manifest") -> Manifest:
    doc = load_json(data, what)
    media_type = kind_of(data, "", what)
    if media_type not in MANIFEST_TYPES:
        raise ManifestError(f"{what}: is a {media_type}, not an image manifest")
    if doc.get("schemaVersion") != 2:
        raise ManifestError(f"{what}: schemaVersion: {doc.get('schemaVersion')!r}, want 2")
    config = _descriptor(doc.get("config"), f"{what}: config")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise ManifestError(f"{what}: layers: missing or not a list")
    layers = tuple(_descriptor(d, f"{what}: layers[{i}]") for i, d in enumerate(layers_doc))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise ManifestError(
                f"{what}: layers[{i}]: unknown layer media type {layer.media_type!r}"
            )
    return Manifest(media_type=media_type, config=config, layers=layers)


def parse_index(data: bytes, what: str = "index") -> Index:
    doc = load_json(data, what)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise ManifestError(f"{what}: manifests: missing or not a list")
    return Index(
        media_type=str(doc.get("mediaType") or OCI_INDEX),
        manifests=tuple(
            _descriptor(d, f"{what}: manifests[{i}]") for i, d in enumerate(manifests)
        ),
    )


def select_platform(index: Index, want: Platform, what: str = "index") -> Descriptor:
    """The index entry for ``want``: an exact variant first, then one without a variant."""
    candidates = [
        d for d in index.manifests
        if d.platform is not None and d.platform.os == want.os
        and d.platform.architecture == want.architecture
        and d.media_type in MANIFEST_TYPES + INDEX_TYPES
    ]
    for d in candidates:
        if d.platform is not None and d.platform.variant == want.variant:
            return d
    for d in candidates:
        if d.platform is not None and not d.platform.variant:
            return d
    if candidates and want.architecture == "arm64":
        return candidates[0]  # arm64's only variant is v8; some indexes say so, some not
    offered = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
    raise ManifestError(f"{what}: no image for platform {want} (offered: {offered})")


def parse_config(data: bytes, what: str = "image config") -> ImageConfig:
    doc = load_json(data, what)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise ManifestError(f"{what}: config: not an object")
    rootfs = doc.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ManifestError(f"{what}: rootfs.diff_ids: missing or not a list")
    for i, d in enumerate(diff_ids):
        _check_digest(d, f"{what}: rootfs.diff_ids[{i}]")
    return ImageConfig(
        entrypoint=_strings_or_none(cfg.get("Entrypoint"), f"{what}: config.Entrypoint"),
        cmd=_strings_or_none(cfg.get("Cmd"), f"{what}: config.Cmd"),
        env=_strings_or_none(cfg.get("Env"), f"{what}: config.Env") or [],
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        exposed_ports=sorted((cfg.get("ExposedPorts") or {}).keys()),
        labels={str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()},
        stop_signal=str(cfg.get("StopSignal") or ""),
        platform=Platform(str(doc.get("os") or ""), str(doc.get("architecture") or ""),
                          str(doc.get("variant") or "")),
        created=str(doc.get("created") or ""),
        diff_ids=tuple(diff_ids),
    )


def manifest_json(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """An OCI manifest, serialised the one way podium writes it."""
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_json(),
           "layers": [layer.to_json() for layer in layers]}
    return canonical_json(doc)


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(doc: Any, what: str) -> Descriptor:
    _check(isinstance(doc, dict), what, "not an object")
    assert isinstance(doc, dict)
    media_type, digest, size = doc.get("mediaType"), doc.get("digest"), doc.get("size")
    _check(isinstance(media_type, str) and bool(media_type), f"{what}.mediaType")
    _check_digest(digest, f"{what}.digest")
    _check(isinstance(size, int) and not isinstance(size, bool) and size >= 0, f"{what}.size")
    plat = doc.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")),
                            str(plat.get("variant", "")))
    annotations = doc.get("annotations") or {}
    _check(isinstance(annotations, dict), f"{what}.annotations")
    return Descriptor(
        media_type=str(media_type), digest=str(digest), size=cast(int, size), platform=platform,
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def _strings_or_none(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]  # some tools write a shell-form string; keep it as one word
    _check(isinstance(value, list) and all(isinstance(v, str) for v in value), what,
           "not a list of strings")
    return list(value)


def _check_digest(value: Any, what: str) -> None:
    _check(isinstance(value, str), what)
    try:
        check_digest(str(value))
    except ValueError as e:
        raise ManifestError(f"{what}: {e}") from None


def _check(ok: bool, what: str, problem: str = "missing or malformed") -> None:
    if not ok:
        raise ManifestError(f"{what}: {problem}")
