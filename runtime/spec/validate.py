"""Checks on a converted ``ContainerConfig``: a list of small functions, each naming
the field it rejects. ``validate`` runs them all and raises the first problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from runtime.errors import ConfigError
from runtime.spec.capabilities import CAPABILITIES
from runtime.spec.model import HOOK_POINTS, ContainerConfig
from runtime.spec.mountopts import PROPAGATION_NAMES, parse_mount_options
from runtime.syscalls import NAMESPACE_FLAGS

_OCI_VERSION = re.compile(r"^1\.[0-3]\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_RLIMIT_TYPES = frozenset({
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
})
# sysctls that the kernel scopes to a namespace: (prefix, namespace that must be private).
_NAMESPACED_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("kernel.msgmax", "ipc"), ("kernel.msgmnb", "ipc"), ("kernel.msgmni", "ipc"),
    ("kernel.sem", "ipc"), ("kernel.shmall", "ipc"), ("kernel.shmmax", "ipc"),
    ("kernel.shmmni", "ipc"), ("kernel.shm_rmid_forced", "ipc"), ("fs.mqueue.", "ipc"),
    ("net.", "network"), ("kernel.hostname", "uts"), ("kernel.domainname", "uts"),
)
_DEVICE_TYPES = frozenset({"c", "b", "u", "p"})

Check = Callable[[ContainerConfig], None]


def check_oci_version(c: ContainerConfig) -> None:
    if not _OCI_VERSION.match(c.oci_version):
        raise ConfigError("ociVersion", f"{c.oci_version!r} is not a version podium "
                                        "supports (1.0.0 through 1.3.x)")


def check_process(c: ContainerConfig) -> None:
    p = c.process
    if not p.args:
        raise ConfigError("process.args", "must name the program to run")
    if not p.cwd.startswith("/"):
        raise ConfigError("process.cwd", f"{p.cwd!r} must be an absolute path")
    for i, env in enumerate(p.env):
        if "=" not in env or env.startswith("="):
            raise ConfigError(f"process.env[{i}]", f"{env!r} is not NAME=VALUE")
    if p.user.uid < 0 or p.user.gid < 0:
        raise ConfigError("process.user", "uid and gid must not be negative")
    if p.oom_score_adj is not None and not -1000 <= p.oom_score_adj <= 1000:
        raise ConfigError("process.oomScoreAdj", "must be between -1000 and 1000")


def check_capabilities(c: ContainerConfig) -> None:
    caps = c.process.capabilities
    if caps is None:
        return
    for name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        for cap in sorted(getattr(caps, name)):
            if cap not in CAPABILITIES:
                raise ConfigError(f"process.capabilities.{name}", f"unknown capability {cap!r}")


def check_rlimits(c: ContainerConfig) -> None:
    seen: set[str] = set()
    for i, r in enumerate(c.process.rlimits):
        where = f"process.rlimits[{i}]"
        if r.type not in _RLIMIT_TYPES:
            raise ConfigError(f"{where}.type", f"unknown rlimit {r.type!r}")
        if r.type in seen:
            raise ConfigError(f"{where}.type", f"{r.type} given twice")
        seen.add(r.type)
        if r.soft < 0 or r.hard < 0:
            raise ConfigError(where, "soft and hard must not be negative")
        if r.soft > r.hard:
            raise ConfigError(where, f"soft limit {r.soft} is above hard limit {r.hard}")


def check_mounts(c: ContainerConfig) -> None:
    for i, m in enumerate(c.mounts):
        where = f"mounts[{i}]"
        if not m.destination.startswith("/"):
            raise ConfigError(f"{where}.destination",
                              f"{m.destination!r} must be an absolute path")
        if ".." in m.destination.split("/"):
            raise ConfigError(f"{where}.destination", f"{m.destination!r} must not contain '..'")
        try:
            flags = parse_mount_options(m.options)
        except ValueError as e:
            raise ConfigError(f"{where}.options", str(e)) from None
        if (flags.is_bind or m.type == "bind") and not m.source:
            raise ConfigError(f"{where}.source", "a bind mount needs a source")


def check_namespaces(c: ContainerConfig) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(c.namespaces):
        where = f"linux.namespaces[{i}].type"
        if ns.type not in NAMESPACE_FLAGS:
            raise ConfigError(where, f"unknown namespace type {ns.type!r}")
        if ns.type in seen:
            raise ConfigError(where, f"namespace {ns.type!r} listed twice")
        seen.add(ns.type)
        if ns.path is not None and not ns.path.startswith("/"):
            raise ConfigError(f"linux.namespaces[{i}].path", "must be an absolute path")
    has_user = c.namespace("user") is not None
    if (c.uid_mappings or c.gid_mappings) and not has_user:
        raise ConfigError("linux.uidMappings", "ID mappings need a user namespace")
    user = c.namespace("user")
    if user is not None and user.path is None and not (c.uid_mappings and c.gid_mappings):
        raise ConfigError("linux.uidMappings",
                          "a new user namespace needs both uidMappings and gidMappings")
    uts = c.namespace("uts")
    if c.hostname and (uts is None or uts.path is not None):
        raise ConfigError("hostname", "setting a hostname needs a new uts namespace")


def check_sysctl(c: ContainerConfig) -> None:
    for key in c.sysctl:
        for prefix, ns_type in _NAMESPACED_SYSCTLS:
            if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
                if c.namespace(ns_type) is None:
                    raise ConfigError(f"linux.sysctl.{key}",
                                      f"needs a private {ns_type} namespace")
                break
        else:
            raise ConfigError(f"linux.sysctl.{key}",
                              "not a namespaced sysctl: it would change the host")


def check_resources(c: ContainerConfig) -> None:
    r = c.resources
    if r.memory.limit is not None and r.memory.limit < -1:
        raise ConfigError("linux.resources.memory.limit", "must be -1 or a byte count")
    if (r.memory.swap is not None and r.memory.limit is not None and r.memory.swap != -1
            and 0 < r.memory.swap < r.memory.limit):
        raise ConfigError("linux.resources.memory.swap",
                          "is memory plus swap, so it must be at least memory.limit")
    if r.cpu.shares is not None and not 2 <= r.cpu.shares <= 262144:
        raise ConfigError("linux.resources.cpu.shares", "must be between 2 and 262144")
    if r.cpu.period is not None and not 1000 <= r.cpu.period <= 1_000_000:
        raise ConfigError("linux.resources.cpu.period",
                          "must be between 1000 and 1000000 microseconds")
    if r.cpu.quota is not None and r.cpu.quota != -1 and r.cpu.quota < 1000:
        raise ConfigError("linux.resources.cpu.quota", "must be -1 or at least 1000 microseconds")
    for i, rule in enumerate(r.devices):
        if rule.type not in ("a", "c", "b"):
            raise ConfigError(f"linux.resources.devices[{i}].type",
                              f"{rule.type!r} is not a, c or b")
        if not rule.access or set(rule.access) - set("rwm"):
            raise ConfigError(f"linux.resources.devices[{i}].access",
                              f"{rule.access!r} is not a subset of 'rwm'")


def check_devices(c: ContainerConfig) -> None:
    for i, d in enumerate(c.devices):
        if d.type not in _DEVICE_TYPES:
            raise ConfigError(f"linux.devices[{i}].type", f"{d.type!r} is not c, b, u or p")
        if not d.path.startswith("/dev/"):
            raise ConfigError(f"linux.devices[{i}].path", f"{d.path!r} must be under /dev/")


def check_paths(c: ContainerConfig) -> None:
    for name, paths in (("maskedPaths", c.masked_paths), ("readonlyPaths", c.readonly_paths)):
        for i, path in enumerate(paths):
            if not path.startswith("/"):
                raise ConfigError(f"linux.{name}[{i}]", f"{path!r} must be an absolute path")
    if c.cgroups_path is not None and ".." in c.cgroups_path.split("/"):
        raise ConfigError("linux.cgroupsPath", "must not contain '..'")
    if c.rootfs_propagation is not None and c.rootfs_propagation not in PROPAGATION_NAMES:
        raise ConfigError("linux.rootfsPropagation",
                          f"{c.rootfs_propagation!r} is not one of {sorted(PROPAGATION_NAMES)}")


def check_hooks(c: ContainerConfig) -> None:
    for name, field in HOOK_POINTS:
        for i, hook in enumerate(getattr(c.hooks, field)):
            where = f"hooks.{name}[{i}]"
            if not hook.path.startswith("/"):
                raise ConfigError(f"{where}.path", f"{hook.path!r} must be an absolute path")
            # startContainer's path resolves inside the container, which does not exist
            # yet; every other hook's resolves here, in the runtime's namespace.
            if name != "startContainer" and not os.path.exists(hook.path):
                raise ConfigError(f"{where}.path", f"{hook.path}: no such file or directory")
            for j, env in enumerate(hook.env):
                if "=" not in env or env.startswith("="):
                    raise ConfigError(f"{where}.env[{j}]", f"{env!r} is not NAME=VALUE")
            if hook.timeout is not None and hook.timeout <= 0:
                raise ConfigError(f"{where}.timeout",
                                  f"must be a number of seconds above zero, got {hook.timeout}")


def check_seccomp(c: ContainerConfig) -> None:
    profile = c.seccomp
    if profile is None:
        return
    from runtime import seccomp as sc_

    where = "linux.seccomp"

    def check_action(action: str, errno_ret: int | None, field: str, errno_field: str) -> None:
        if action == sc_.NOTIFY:
            raise ConfigError(field, f"{action} needs a seccomp agent (listenerPath), "
                                     "which podium does not support")
        if action not in sc_.ACTIONS:
            raise ConfigError(field, f"unknown action {action!r}; use one of "
                                     f"{', '.join(sc_.ACTIONS)}")
        if errno_ret is not None:
            if action not in sc_.ERRNO_ACTIONS:
                raise ConfigError(errno_field, f"{action} returns no errno: only "
                                               "SCMP_ACT_ERRNO and SCMP_ACT_TRACE take one")
            if not 0 <= errno_ret <= sc_.MAX_ERRNO:
                raise ConfigError(errno_field, f"{errno_ret} is not an errno "
                                               f"(0 to {sc_.MAX_ERRNO})")

    check_action(profile.default_action, profile.default_errno_ret, f"{where}.defaultAction",
                 f"{where}.defaultErrnoRet")
    for i, arch in enumerate(profile.architectures):
        if arch not in sc_.ARCHITECTURES:
            raise ConfigError(f"{where}.architectures[{i}]", f"unknown architecture {arch!r}")
    for i, flag in enumerate(profile.flags):
        if flag in sc_.UNSUPPORTED_FLAGS:
            raise ConfigError(f"{where}.flags[{i}]", f"{flag} is not supported by podium")
        if flag not in sc_.FLAGS:
            raise ConfigError(f"{where}.flags[{i}]", f"unknown flag {flag!r}")
    for i, rule in enumerate(profile.syscalls):
        at = f"{where}.syscalls[{i}]"
        if not rule.names:
            raise ConfigError(f"{at}.names", "must name at least one system call")
        for j, name in enumerate(rule.names):
            if not name:
                raise ConfigError(f"{at}.names[{j}]", "must not be empty")
        check_action(rule.action, rule.errno_ret, f"{at}.action", f"{at}.errnoRet")
        if len(rule.args) > sc_.MAX_ARGS:
            raise ConfigError(f"{at}.args", f"at most {sc_.MAX_ARGS} comparisons")
        for j, arg in enumerate(rule.args):
            if not 0 <= arg.argument < sc_.MAX_ARGS:
                raise ConfigError(f"{at}.args[{j}].index", f"{arg.argument} is not 0 to 5")
            if arg.op not in sc_.OPERATORS:
                raise ConfigError(f"{at}.args[{j}].op", f"unknown operator {arg.op!r}")
            for key, value in (("value", arg.value), ("valueTwo", arg.value_two)):
                if not 0 <= value < 1 << 64:
                    raise ConfigError(f"{at}.args[{j}].{key}", f"{value} is not a uint64")
    # The host must be able to apply it; importing the binding here, in the caller,
    # also means the init finds it loaded after it pivots into the container's root.
    sc_.binding()


CHECKS: tuple[Check, ...] = (
    check_oci_version, check_process, check_capabilities, check_rlimits, check_mounts,
    check_namespaces, check_sysctl, check_resources, check_devices, check_paths, check_hooks,
    check_seccomp,
)


def validate(config: ContainerConfig) -> None:
    for check in CHECKS:
        check(config)
