"""The image store's exceptions, one tree so callers can catch at the depth they need.

    runtime.errors.RuntimeError_
    └── ImageError (base: every error of ``runtime.images``)
        ├── InvalidReference   an image name that does not parse; ``part`` names the bad
        │                      piece ("tag", "digest", "domain", "path component 'Foo'")
        ├── ImageNotFound      no image by that name (or digest) in the store
        ├── ImageInUse         ``rm`` of an image a holder (a container) has marked in use
        ├── ContentError       stored or fetched content is wrong
        │   ├── DigestMismatch   bytes whose sha256 is not the digest they were asked for
        │   └── ManifestError    a manifest, index or config that is malformed, of an unknown
        │                        media type, or has no entry for the wanted platform
        ├── LayerError         a layer cannot be unpacked (bad compression, corrupt tar,
        │   │                  disk full); the partial directory is already removed
        │   └── UnsafeLayer      an entry would land outside the layer directory
        ├── ArchiveError       an import/load/save archive that is not what it claims
        ├── ProcessArgsError   no process to run: neither the image nor the container names one
        └── RegistryError      a registry answered with an error or could not be reached;
            └── AuthError        credentials refused or missing (401/403)

Every message says what went wrong and where (name, digest, path, URL), on one line,
so the command line can print it as it is.
"""

from __future__ import annotations

from runtime.errors import RuntimeError_


class ImageError(RuntimeError_):
    """Base of every error ``runtime.images`` raises on purpose."""


class InvalidReference(ImageError, ValueError):
    def __init__(self, reference: str, part: str, problem: str) -> None:
        self.reference = reference
        self.part = part
        self.problem = problem
        super().__init__(f"invalid image name {reference!r}: {part}: {problem}")


class ImageNotFound(ImageError, LookupError):
    pass


class ImageInUse(ImageError):
    def __init__(self, name: str, holders: list[str]) -> None:
        self.name = name
        self.holders = holders
        super().__init__(
            f"image {name} is in use by {', '.join(holders)}: remove those first"
        )


class ContentError(ImageError):
    pass


class DigestMismatch(ContentError):
    def __init__(self, what: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")


class ManifestError(ContentError):
    pass


class LayerError(ImageError):
    pass


class UnsafeLayer(LayerError):
    def __init__(self, layer: str, entry: str, problem: str) -> None:
        self.layer = layer
        self.entry = entry
        super().__init__(f"layer {layer}: entry {entry!r} rejected: {problem}")


class ArchiveError(ImageError):
    pass


class ProcessArgsError(ImageError):
    pass


class RegistryError(ImageError):
    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthError(RegistryError):
    pass
