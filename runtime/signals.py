"""Signal names as runc's callers write them (``TERM``, ``SIGTERM``, ``15``), and the
signal state a container's process starts with."""

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


# Ignored by Python itself at start-up, so that writes fail with EPIPE and EFBIG
# instead of killing the interpreter.
_PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)


def restore_for_exec() -> None:
    """Right before a container's ``execve``: the signal state a program expects.

    An ignored signal stays ignored across ``execve`` (a handled one goes back to
    its default), and the mask of blocked signals is kept too. Without this every
    container would inherit Python's ignored SIGPIPE and SIGXFSZ: ``yes | head -1``
    would end with "Broken pipe" errors instead of quietly."""
    for sig in _PYTHON_IGNORES:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
