"""``podium image import --change``: Dockerfile instructions that set an image's config.

    --change 'CMD ["python3", "/app/web.py"]'   --change 'ENV LANG=C.UTF-8'

Accepted, as ``docker import --change`` accepts them: CMD, ENTRYPOINT (exec form
as a JSON list, or shell form run by ``/bin/sh -c``), ENV and LABEL (``k=v`` …,
or ``k v``), WORKDIR, USER, EXPOSE (``8080``, ``53/udp``), STOPSIGNAL. Each
becomes a field of the image config's ``config`` section (``Cmd``, ``Env`` …).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from client.cli import UsageError

_LIST_KEYS = {"CMD": "Cmd", "ENTRYPOINT": "Entrypoint"}
_TEXT_KEYS = {"WORKDIR": "WorkingDir", "USER": "User", "STOPSIGNAL": "StopSignal"}


def apply_changes(changes: list[str], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The image ``config`` section after ``changes`` (later ones win, ENV adds up)."""
    out: dict[str, Any] = dict(config or {})
    for change in changes:
        word, _, rest = change.strip().partition(" ")
        instruction, rest = word.upper(), rest.strip()
        if not rest:
            raise UsageError(f"--change {change!r}: {instruction or 'instruction'} needs a value")
        if instruction in _LIST_KEYS:
            out[_LIST_KEYS[instruction]] = _command(rest, change)
        elif instruction in _TEXT_KEYS:
            out[_TEXT_KEYS[instruction]] = rest
        elif instruction == "ENV":
            env = [e for e in out.get("Env", []) if isinstance(e, str)]
            for key, value in _pairs(rest, change):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            out["Env"] = env
        elif instruction == "LABEL":
            out["Labels"] = {**out.get("Labels", {}), **dict(_pairs(rest, change))}
        elif instruction == "EXPOSE":
            ports = dict(out.get("ExposedPorts", {}))
            for port in rest.split():
                ports[_port(port, change)] = {}
            out["ExposedPorts"] = ports
        else:
            raise UsageError(f"--change {change!r}: unknown instruction {word!r} (use CMD, "
                             "ENTRYPOINT, ENV, LABEL, WORKDIR, USER, EXPOSE or STOPSIGNAL)")
    return out


def _command(text: str, change: str) -> list[str]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"--change {change!r}: the exec form must be a JSON list of "
                             "strings")
        return value
    return ["/bin/sh", "-c", text]


def _pairs(text: str, change: str) -> list[tuple[str, str]]:
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise UsageError(f"--change {change!r}: {e}") from None
    if "=" not in words[0]:  # the old form: ENV key value with spaces
        return [(words[0], text.split(None, 1)[1] if len(words) > 1 else "")]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise UsageError(f"--change {change!r}: {word!r} is not key=value")
        pairs.append((key, value))
    return pairs


def _port(text: str, change: str) -> str:
    number, _, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("tcp", "udp",
                                                                              "sctp"):
        raise UsageError(f"--change {change!r}: {text!r} is not a port (8080, 53/udp)")
    return f"{int(number)}/{proto}"
