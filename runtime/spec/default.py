"""The config.json ``podium-runtime spec`` writes: runc's defaults, a busybox-friendly shell."""

from __future__ import annotations

from typing import Any

from runtime.spec.model import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_MOUNTS,
    DEFAULT_READONLY_PATHS,
)

OCI_VERSION = "1.2.0"


def default_config(args: list[str] | None = None, terminal: bool = False) -> dict[str, Any]:
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "podium",
        "mounts": [
            {"destination": m.destination, "type": m.type, "source": m.source}
            | ({"options": list(m.options)} if m.options else {})
            for m in DEFAULT_MOUNTS
        ],
        "linux": {
            "resources": {},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                  "cgroup")],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }
