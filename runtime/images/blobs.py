"""Writing blobs into the store: verified, atomic, resumable, done once.

A blob is written to ``ingest/<hex>`` under a per-digest lock and renamed into
``blobs/sha256/<hex>`` only when its sha256 matches, so ``blobs/`` holds only
verified content. A partial file left by an interrupted download stays in
``ingest/`` and the next writer resumes from its end (``offset``); if the
finished bytes do not match, the partial file is dropped and the error raised, so
the next attempt starts over. Two processes fetching the same blob serialise on
its lock, and the second finds it ``done``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from runtime.images.digest import CHUNK, hex_of
from runtime.images.errors import DigestMismatch
from runtime.images.lock import locked


def write_atomic(path: Path, data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once (temp file + rename).

    ``sync``: the data reaches the disk before the rename, so an OS crash leaves the
    old or the new content. Without it, readers still see one or the other (a
    process crash included), but after an OS crash the file may be torn.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class BlobWriter:
    """``with BlobWriter(...) as w:`` — if not ``w.done``: ``w.write(...)``, then ``w.commit()``."""

    def __init__(self, blobs: Path, ingest: Path, locks: Path, digest: str, what: str) -> None:
        self.digest = digest
        self.what = what
        hexpart = hex_of(digest)
        self.final = blobs / hexpart
        self.partial = ingest / hexpart
        self._lock = locked(locks / f"blob-{hexpart}.lock")
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self.offset = 0
        self.done = False

    def __enter__(self) -> BlobWriter:
        self._lock.__enter__()
        if self.final.exists():
            self.done = True
            return self
        self._file = open(self.partial, "a+b")  # noqa: SIM115 - closed in __exit__
        self._file.seek(0)
        while chunk := self._file.read(CHUNK):
            self._hash.update(chunk)
            self.offset += len(chunk)
        return self

    def restart(self) -> None:
        """Drop what a previous attempt wrote (a server that cannot resume)."""
        assert self._file is not None
        self._file.truncate(0)
        self._file.seek(0)
        self._hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after done"
        self._file.write(data)
        self._hash.update(data)
        self.offset += len(data)

    def commit(self) -> None:
        assert self._file is not None
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self._file.close()
            self._file = None
            self.partial.unlink(missing_ok=True)
            raise DigestMismatch(self.what, self.digest, actual)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.chmod(self.partial, 0o644)
        os.rename(self.partial, self.final)
        self.done = True

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()  # a partial download stays for the next attempt to resume
        self._lock.__exit__(kind, value, tb)
