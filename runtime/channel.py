"""Messages over pipes between the runtime's processes.

The set-up channel (``send``, ``messages``): newline-delimited JSON from the forked
stages of a container's start (and exec) back to the process that called
``create``. One message a line; a stage reports either progress (``{"pid": 42}``,
``{"ready": true}``) or its failure (``{"error": "exec: /nope: no such file or
directory"}``). End of file with no ``ready`` means a stage died without a word.

One answer (``send_message``, ``read_message``): bytes, their length first, for a
pipe whose end a long-lived process may keep (a shim's); ``pickled`` makes them of
a result or an exception.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any


def send(fd: int, **message: Any) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def messages(fd: int) -> Iterator[dict[str, Any]]:
    """Yield each message as it arrives, until every writer has closed its end."""
    buffer = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def send_message(fd: int, data: bytes) -> None:
    """Write ``data`` to a pipe, its length first: a process the writer forked (a
    shim) may hold the pipe open for its whole life, so the reader cannot wait for
    end of file."""
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]


def read_message(fd: int, timeout: float | None = None) -> bytes | None:
    """One ``send_message``; b"" if the writers closed the pipe without one, None when
    ``timeout`` seconds pass first (None: wait as long as it takes)."""
    import select

    deadline = None if timeout is None else time.monotonic() + timeout
    data = b""
    wanted = 8
    while len(data) < wanted:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        data += chunk
        if wanted == 8 and len(data) >= 8:
            wanted = 8 + int.from_bytes(data[:8], "big")
    return data[8:wanted]


def pickled(outcome: object) -> bytes:
    """``outcome`` (a result, or an exception to raise in another process) pickled; an
    exception that cannot be pickled crosses as a SetupError with its words."""
    import pickle

    try:
        return pickle.dumps(outcome)
    except Exception:  # noqa: BLE001 - whatever stops it, its words can cross
        from runtime.errors import SetupError

        return pickle.dumps(SetupError(str(outcome) or type(outcome).__name__))
