"""Container images on a node: names, the store, layers, archives and registries.

    from runtime.images import ImageStore, parse_reference, resolve_process_args

    store = ImageStore("/var/lib/podium/images")
    store.lower_dirs("busybox")            # overlayfs lower dirs, top first
    store.image_config("busybox").cmd      # what the container runs by default
    build(store, "app/", tag="app:1")       # a Dockerfile build, RUN by podium's runtime

Public names load on first use, so importing this package stays cheap (the registry
client's HTTP and TLS modules load only when a pull or push needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.images.archive import import_rootfs, load_archive, save_archive
    from runtime.images.builder import BuildError, build
    from runtime.images.dockerfile import DockerfileError
    from runtime.images.errors import (
        ArchiveError,
        AuthError,
        ContentError,
        DigestMismatch,
        ImageError,
        ImageInUse,
        ImageNotFound,
        InvalidReference,
        LayerError,
        ManifestError,
        ProcessArgsError,
        RegistryError,
        UnsafeLayer,
    )
    from runtime.images.layers import PruneReport
    from runtime.images.oci import ImageConfig, Platform, host_platform
    from runtime.images.process import resolve_process_args
    from runtime.images.progress import Progress, TextProgress
    from runtime.images.reference import Reference, normalize, parse_reference
    from runtime.images.registry import Credentials, RegistryClient
    from runtime.images.store import DEFAULT_ROOT, ImageStore, ImageSummary
    from runtime.images.transfer import pull, push

_EXPORTS = {
    "import_rootfs": "archive", "load_archive": "archive", "save_archive": "archive",
    "BuildError": "builder", "build": "builder", "DockerfileError": "dockerfile",
    "ArchiveError": "errors", "AuthError": "errors", "ContentError": "errors",
    "DigestMismatch": "errors", "ImageError": "errors", "ImageInUse": "errors",
    "ImageNotFound": "errors", "InvalidReference": "errors", "LayerError": "errors",
    "ManifestError": "errors", "ProcessArgsError": "errors", "RegistryError": "errors",
    "UnsafeLayer": "errors",
    "PruneReport": "layers",
    "ImageConfig": "oci", "Platform": "oci", "host_platform": "oci",
    "resolve_process_args": "process", "Progress": "progress", "TextProgress": "progress",
    "Reference": "reference", "normalize": "reference", "parse_reference": "reference",
    "Credentials": "registry", "RegistryClient": "registry", "pull": "transfer",
    "push": "transfer",
    "DEFAULT_ROOT": "store", "ImageStore": "store", "ImageSummary": "store",
}

__all__ = [
    "ArchiveError", "AuthError", "BuildError", "ContentError", "Credentials", "DEFAULT_ROOT",
    "DigestMismatch", "DockerfileError", "ImageConfig", "ImageError", "ImageInUse",
    "ImageNotFound", "ImageStore", "ImageSummary", "InvalidReference", "LayerError",
    "ManifestError", "Platform", "ProcessArgsError", "Progress", "PruneReport", "Reference",
    "RegistryClient", "RegistryError", "TextProgress", "UnsafeLayer", "build", "host_platform",
    "import_rootfs", "load_archive", "normalize", "parse_reference", "pull", "push",
    "resolve_process_args", "save_archive",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
