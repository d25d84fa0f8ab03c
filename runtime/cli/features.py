"""The runtime spec's features document: what this runtime accepts."""

from __future__ import annotations

from typing import Any

from runtime import seccomp
from runtime.spec.capabilities import CAPABILITIES
from runtime.spec.default import OCI_VERSION
from runtime.spec.mountopts import OPTION_NAMES
from runtime.syscalls import NAMESPACE_FLAGS


def features() -> dict[str, Any]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": sorted(OPTION_NAMES),
        "linux": {
            "namespaces": sorted(NAMESPACE_FLAGS),
            "capabilities": sorted(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(seccomp.ACTIONS),
                "operators": sorted(seccomp.OPERATORS),
                "archs": sorted(seccomp.ARCHITECTURES),
                "knownFlags": sorted({*seccomp.FLAGS, *seccomp.UNSUPPORTED_FLAGS}),
                "supportedFlags": sorted(seccomp.FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.version": "podium"},
    }
