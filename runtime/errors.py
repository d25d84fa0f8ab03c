"""The runtime's exceptions, one tree so callers can catch at the depth they need.

    RuntimeError_ (base: every error the runtime raises on purpose)
    ├── ConfigError          config.json or an in-code spec is malformed or unsupported;
    │                        ``field`` names the offending field ("linux.namespaces[2].type")
    ├── BundleError          the bundle directory, config.json or rootfs is missing
    ├── InvalidIDError       a container ID that is empty, too long or not a plain name
    ├── ContainerExistsError an ID already in use under the runtime root
    ├── ContainerNotFound    no container with that ID under the runtime root
    ├── IllegalTransition    the container's state forbids the verb (start of a running one)
    ├── CgroupError          a cgroup could not be created, written or removed (``path``)
    ├── SetupError           the container's init failed while setting itself up; the
    │                        message is the init's own ("exec: /nope: no such file or directory")
    └── SignalError          a signal name or number that does not exist

Every message says what went wrong and where, on one line, so the CLI can print it
as it is.
"""

from __future__ import annotations


class RuntimeError_(Exception):
    """Base of every error the runtime raises on purpose."""


class ConfigError(RuntimeError_):
    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config: {field}: {problem}" if field else f"config: {problem}")


class BundleError(RuntimeError_):
    pass


class InvalidIDError(RuntimeError_):
    pass


class ContainerExistsError(RuntimeError_):
    pass


class ContainerNotFound(RuntimeError_):
    pass


class IllegalTransition(RuntimeError_):
    pass


class CgroupError(RuntimeError_):
    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"cgroup {path}: {problem}")


class SetupError(RuntimeError_):
    pass


class SignalError(RuntimeError_):
    pass
