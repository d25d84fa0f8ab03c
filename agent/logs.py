"""Reading the containers' CRI log files, as ``kubectl logs`` shows them.

A shim writes one line per record: ``<RFC3339Nano> <stream> <tag> <text>``, tag
``F`` for a full line and ``P`` for a piece of a longer one. ``entries`` joins the
pieces back and yields ``(time, text)``; ``render`` gives what a client prints:
the text and a newline, the timestamp first on request. ``follow`` keeps reading
a file as it grows, until told the container has stopped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple


class Entry(NamedTuple):
    time: str  # as written: RFC 3339 with nanoseconds
    text: bytes


def parse_time(text: str) -> datetime | None:
    # datetime takes at most microseconds: cut the fraction to six digits.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class _Joiner:
    """Joins ``P`` pieces into whole lines, one record at a time."""

    def __init__(self) -> None:
        self.pieces: dict[bytes, list[bytes]] = {}

    def add(self, record: bytes) -> Entry | None:
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            return None  # not a CRI record (a torn write): skipped
        when, stream, tag = parts[0], parts[1], parts[2]
        text = parts[3] if len(parts) == 4 else b""
        if tag == b"P":
            self.pieces.setdefault(stream, []).append(text)
            return None
        whole = b"".join(self.pieces.pop(stream, [])) + text
        return Entry(when.decode(errors="replace"), whole)


def entries(records: Iterable[bytes]) -> Iterator[Entry]:
    joiner = _Joiner()
    for record in records:
        entry = joiner.add(record.rstrip(b"\n"))
        if entry is not None:
            yield entry


def select(found: Iterable[Entry], tail: int | None = None,
           since: datetime | None = None) -> list[Entry]:
    kept: Iterable[Entry] = found
    if since is not None:
        kept = [e for e in kept if (t := parse_time(e.time)) is None or t >= since]
    if tail is not None:
        return list(deque(kept, maxlen=max(tail, 0)))
    return list(kept)


def render(entry: Entry, timestamps: bool) -> bytes:
    return (entry.time.encode() + b" " if timestamps else b"") + entry.text + b"\n"


def follow(path: Path, running: Callable[[], bool], active: Callable[[], bool],
           start: int, poll: float = 0.1) -> Iterator[Entry]:
    """Entries written to ``path`` from byte ``start`` on, until the container stops
    (``running`` is false and the file is drained) or the caller goes (``active``)."""
    joiner = _Joiner()
    buffer = b""
    offset = start
    while active():
        alive = running()  # asked before reading, so nothing written after is lost
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        offset += len(data)
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            entry = joiner.add(line)
            if entry is not None:
                yield entry
        if not alive:
            return
        if not data:
            time.sleep(poll)


def read(path: Path) -> tuple[list[Entry], int]:
    """Every entry of ``path`` and the offset its whole lines end at."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    return list(entries(data[:end].split(b"\n")[:-1])), end
