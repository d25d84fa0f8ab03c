"""Pins the runtime package's public names, so changing them is a decision."""

from __future__ import annotations

import runtime


def test_public_names() -> None:
    assert sorted(runtime.__all__) == sorted([
        "BundleError", "CgroupError", "CgroupStats", "ConfigError", "ContainerConfig",
        "ContainerExistsError", "ContainerNotFound", "ForkServer", "IllegalTransition",
        "InvalidIDError", "Runtime", "RuntimeError_", "SetupError", "ShimRequest",
        "SignalError", "State", "Status", "convert", "default_config", "exit_record",
        "load_bundle", "spawn_shim", "validate",
    ])
    assert set(runtime.__all__) == set(runtime._HOMES)
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None, name


def test_every_error_is_a_runtime_error() -> None:
    for name in runtime.__all__:
        value = getattr(runtime, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, runtime.RuntimeError_), name
