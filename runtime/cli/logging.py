"""runc-style logging: text to stderr by default, ``--log FILE``, ``--log-format json``.

With json each line is ``{"level": ..., "msg": ..., "time": ...}`` so a calling
engine can show the runtime's errors to its user.
"""

from __future__ import annotations

import json
import sys
import time


class Logger:
    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug

    def _write(self, level: str, msg: str) -> None:
        if self.fmt == "json":
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f"podium-runtime: {msg}" if level == "error" else f"{level}: {msg}"
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        if not self.path or (level == "error" and self.fmt == "text"):
            sys.stderr.write(line + "\n")

    def error(self, msg: str) -> None:
        self._write("error", msg)

    def warning(self, msg: str) -> None:
        self._write("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._write("debug", msg)
