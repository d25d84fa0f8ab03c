"""Image references by Docker's rules: ``busybox`` is ``docker.io/library/busybox:latest``.

    [domain[:port]/]path[:tag][@algorithm:hex]

- The first ``/``-separated part is a domain only if it looks like one: it contains a
  ``.`` or a ``:``, is ``localhost``, or has an upper-case letter. Otherwise the name is
  on the default registry, and a one-part path there gets the ``library/`` prefix.
- Path components are lower-case alphanumerics joined by ``.``, ``_``, ``__`` or dashes.
- A tag is at most 128 word characters, dots and dashes, not starting with ``.``/``-``.
- With neither tag nor digest the tag is ``latest``; with a digest the digest decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from runtime.images.errors import InvalidReference

# Docker's reference normalisation is the one place the default registry is named.
DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_OFFICIAL_PREFIX = "library/"
# The default registry serves its API from another host than the names' domain.
_DEFAULT_API_HOST = "registry-1." + DEFAULT_DOMAIN

_MAX_NAME = 255
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?\Z"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*\Z")
_HEX = re.compile(r"[a-f0-9]{32,}\Z")
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_IMAGE_ID = re.compile(r"[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """``domain/path``: the name without tag or digest."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    @property
    def familiar(self) -> str:
        """The short form people type (``busybox:latest``, ``example.test/a/b:1``)."""
        name = self.path
        if self.domain == DEFAULT_DOMAIN:
            name = name.removeprefix(_OFFICIAL_PREFIX)
        else:
            name = f"{self.domain}/{name}"
        if self.tag is not None:
            name += ":" + self.tag
        if self.digest is not None:
            name += "@" + self.digest
        return name

    def with_tag(self, tag: str) -> Reference:
        check_tag(str(self), tag)
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        check_digest(str(self), digest)
        return replace(self, digest=digest)


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``, or raise InvalidReference naming the bad part."""
    if not text:
        raise InvalidReference(text, "name", "empty")
    if text != text.strip():
        raise InvalidReference(text, "name", "leading or trailing white space")
    if _IMAGE_ID.match(text):
        raise InvalidReference(
            text, "name", "a 64-character hexadecimal string is an image ID, not a name"
        )
    remainder, digest = text, None
    if "@" in text:
        remainder, digest = text.split("@", 1)
        check_digest(text, digest)
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        check_tag(text, tag)
    if not remainder:
        raise InvalidReference(text, "name", "no repository before the tag or digest")
    domain, path = _split_domain(text, remainder)
    for component in path.split("/"):
        _check_component(text, component)
    if len(domain) + 1 + len(path) > _MAX_NAME:
        raise InvalidReference(text, "name", f"longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(text: str) -> str:
    """The canonical string of ``text`` (``busybox`` → ``docker.io/library/busybox:latest``)."""
    return str(parse_reference(text))


def registry_host(domain: str) -> str:
    """The host (and port) that serves the registry API for names under ``domain``."""
    return _DEFAULT_API_HOST if domain == DEFAULT_DOMAIN else domain


def check_tag(reference: str, tag: str) -> None:
    if not _TAG.match(tag):
        raise InvalidReference(
            reference, f"tag {tag!r}",
            "must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        )


def check_digest(reference: str, digest: str) -> None:
    algorithm, sep, hexpart = digest.partition(":")
    if not sep or not _ALGORITHM.match(algorithm):
        raise InvalidReference(reference, f"digest {digest!r}", "must be ALGORITHM:HEX")
    want = _HEX_LENGTH.get(algorithm)
    if want is None:
        raise InvalidReference(
            reference, f"digest {digest!r}", f"unsupported algorithm {algorithm!r}"
        )
    if not _HEX.match(hexpart) or len(hexpart) != want:
        raise InvalidReference(
            reference, f"digest {digest!r}",
            f"{algorithm} needs {want} lower-case hexadecimal digits",
        )


def _split_domain(text: str, name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    looks_like_domain = (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if not sep or not looks_like_domain:
        domain, path = DEFAULT_DOMAIN, name
    else:
        if not _DOMAIN.match(first):
            raise InvalidReference(text, f"domain {first!r}", "not a valid host[:port]")
        domain, path = first, rest
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    return domain, path


def _check_component(text: str, component: str) -> None:
    if not component:
        raise InvalidReference(text, "path", "empty path component (a doubled or trailing '/')")
    if component.lower() != component:
        raise InvalidReference(
            text, f"path component {component!r}", "repository names must be lower-case"
        )
    if not _COMPONENT.match(component):
        raise InvalidReference(
            text, f"path component {component!r}",
            "only lower-case letters and digits, joined by '.', '_', '__' or '-'",
        )
