"""``podium exec``'s plumbing: stdin to the stream, the stream to stdout/stderr,
and with ``-t`` on a terminal, raw mode and window-size changes."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sys
import termios
import threading
import tty as ttymode
from collections.abc import Iterator
from types import FrameType
from typing import Any

from proto.podium.v1 import agent_pb2

_END = None


def _size() -> agent_pb2.TerminalSize:
    cols, rows = shutil.get_terminal_size()
    return agent_pb2.TerminalSize(rows=rows, columns=cols)


def run_exec(c: Any, pod: str, namespace: str, container: str, command: list[str], *,
             stdin: bool, tty: bool) -> int:
    """Runs the command; returns its exit code (128+signal if a signal ended it)."""
    use_tty = tty
    on_terminal = use_tty and sys.stdin.isatty()
    start = agent_pb2.ExecStart(namespace=namespace, pod=pod, container=container,
                                command=command, tty=use_tty, stdin=stdin)
    if use_tty:
        start.terminal_size.CopyFrom(_size())
    inputs: queue.Queue[agent_pb2.ExecRequest | None] = queue.Queue()

    def requests() -> Iterator[agent_pb2.ExecRequest]:
        while (item := inputs.get()) is not _END:
            yield item

    def pump() -> None:
        fd = sys.stdin.fileno()
        while data := os.read(fd, 32768):
            inputs.put(agent_pb2.ExecRequest(stdin=data))
        inputs.put(agent_pb2.ExecRequest(close_stdin=True))

    if stdin:
        threading.Thread(target=pump, daemon=True).start()
    saved = termios.tcgetattr(sys.stdin.fileno()) if on_terminal else None
    old_handler: Any = None
    if on_terminal:
        ttymode.setraw(sys.stdin.fileno())

        def resized(signum: int, frame: FrameType | None) -> None:
            inputs.put(agent_pb2.ExecRequest(resize=_size()))

        old_handler = signal.signal(signal.SIGWINCH, resized)
    code = 1
    try:
        for response in c.exec_stream(start, requests()):
            which = response.WhichOneof("response")
            if which == "stdout":
                sys.stdout.buffer.write(response.stdout)
                sys.stdout.buffer.flush()
            elif which == "stderr":
                sys.stderr.buffer.write(response.stderr)
                sys.stderr.buffer.flush()
            elif which == "exit":
                e = response.exit
                code = 128 + e.signal if e.signal else e.exit_code
                if e.message and code:
                    sys.stderr.write(f"podium: {e.message}\n")
    finally:
        inputs.put(_END)
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)
    return code
