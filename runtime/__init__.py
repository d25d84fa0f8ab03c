"""podium's container runtime, as a library (the agent) and a command (``podium-runtime``).

    from runtime import Runtime, load_bundle
    rt = Runtime()                      # state under /run/podium/runtime, cgroups under podium/
    rt.create("web", load_bundle(Path("bundle")).config)
    rt.start("web")

Public names are loaded on first use, so ``podium-runtime`` starts without importing
what a command does not need. Errors are the tree in ``runtime.errors``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.api import Runtime
    from runtime.cgroups import CgroupStats
    from runtime.errors import (
        BundleError,
        CgroupError,
        ConfigError,
        ContainerExistsError,
        ContainerNotFound,
        IllegalTransition,
        InvalidIDError,
        RuntimeError_,
        SetupError,
        SignalError,
    )
    from runtime.forkserver import ForkServer, ShimRequest
    from runtime.shim import exit_record, spawn_shim
    from runtime.spec.convert import convert, load_bundle
    from runtime.spec.default import default_config
    from runtime.spec.model import ContainerConfig
    from runtime.spec.validate import validate
    from runtime.state import State, Status

_HOMES: dict[str, str] = {
    "Runtime": "runtime.api",
    "CgroupStats": "runtime.cgroups",
    "ForkServer": "runtime.forkserver",
    "ShimRequest": "runtime.forkserver",
    "exit_record": "runtime.shim",
    "spawn_shim": "runtime.shim",
    "ContainerConfig": "runtime.spec",
    "convert": "runtime.spec",
    "default_config": "runtime.spec",
    "load_bundle": "runtime.spec",
    "validate": "runtime.spec",
    "State": "runtime.state",
    "Status": "runtime.state",
    **{name: "runtime.errors" for name in (
        "BundleError", "CgroupError", "ConfigError", "ContainerExistsError",
        "ContainerNotFound", "IllegalTransition", "InvalidIDError", "RuntimeError_",
        "SetupError", "SignalError")},
}

__all__ = [
    "BundleError", "CgroupError", "CgroupStats", "ConfigError", "ContainerConfig",
    "ContainerExistsError", "ContainerNotFound", "ForkServer", "IllegalTransition",
    "InvalidIDError", "Runtime", "RuntimeError_", "SetupError", "ShimRequest",
    "SignalError", "State", "Status", "convert", "default_config", "exit_record",
    "load_bundle", "spawn_shim", "validate",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(import_module(home), name)
