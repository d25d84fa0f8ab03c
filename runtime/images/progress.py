"""Transfer progress: a bar per layer on a terminal, plain lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR = 30


class Progress:
    """Receives transfer events; this base class reports nothing."""

    def start(self, what: str, total: int) -> None:
        pass

    def advance(self, what: str, done: int) -> None:
        pass

    def finish(self, what: str, note: str = "done") -> None:
        pass


class TextProgress(Progress):
    def __init__(self, out: TextIO | None = None, verb: str = "pulling") -> None:
        self.out = out if out is not None else sys.stderr
        self.verb = verb
        self.tty = self.out.isatty()
        self._totals: dict[str, int] = {}
        self._shown = 0.0

    def start(self, what: str, total: int) -> None:
        self._totals[what] = total
        if not self.tty:
            self.out.write(f"{self.verb} {what} ({_size(total)})\n")
            self.out.flush()

    def advance(self, what: str, done: int) -> None:
        now = time.monotonic()
        if not self.tty or now - self._shown < 0.1:
            return
        self._shown = now
        total = self._totals.get(what, 0) or 1
        filled = min(_BAR, _BAR * done // total)
        self.out.write(f"\r{what} [{'#' * filled}{'.' * (_BAR - filled)}] "
                       f"{_size(done)}/{_size(total)}")
        self.out.flush()

    def finish(self, what: str, note: str = "done") -> None:
        prefix = "\r\033[K" if self.tty else ""
        self.out.write(f"{prefix}{what}: {note}\n")
        self.out.flush()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"
