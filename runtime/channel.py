"""The set-up channel: newline-delimited JSON messages from the forked stages of a
container's start (and exec) back to the process that called ``create``.

One message a line; a stage reports either progress (``{"pid": 42}``,
``{"ready": true}``) or its failure (``{"error": "exec: /nope: no such file or
directory"}``). End of file with no ``ready`` means a stage died without a word.
"""

from __future__ import annotations

import json
import os
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
