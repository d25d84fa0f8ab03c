"""Signal names as runc's callers write them: ``TERM``, ``SIGTERM``, ``15``."""

from __future__ import annotations

import signal

from runtime.errors import SignalError


def parse_signal(text: str) -> int:
    value = text.strip().upper()
    if value.isdigit():
        number = int(value)
        if 0 < number < signal.SIGRTMAX + 1:
            return number
        raise SignalError(f"unknown signal {text!r}")
    name = value if value.startswith("SIG") else "SIG" + value
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise SignalError(f"unknown signal {text!r}") from None
