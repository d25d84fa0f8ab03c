"""sha256 digests: computing them while streaming, and checking their form."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

_SHA256 = re.compile(r"sha256:[a-f0-9]{64}\Z")
CHUNK = 1 << 20


def check_digest(digest: str) -> None:
    """ValueError unless ``digest`` is ``sha256:`` and 64 lower-case hex digits."""
    if not _SHA256.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest (sha256:<64 hex digits>)")


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_file(stream: BinaryIO) -> tuple[str, int]:
    """The digest and size of what is left to read in ``stream``."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def hex_of(digest: str) -> str:
    check_digest(digest)
    return digest.split(":", 1)[1]


class HashingReader:
    """A read-only stream that hashes (and counts) whatever is read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
