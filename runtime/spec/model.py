"""The runtime's one internal form of a container's configuration.

OCI ``config.json`` (or a spec built in code by the agent) is converted into these
immutable records once, by ``runtime.spec.convert``, and checked by
``runtime.spec.validate``; every later step reads only this form.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple compiles every
# field annotation that is a string (into a ForwardRef), which made importing this
# module, on every podium-runtime command, ~2.5 ms slower. Each record only names
# types defined above it.
import copyreg
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

# Docker's default capability set: what a container's root keeps.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# runc's defaults: paths that leak host information or allow host changes.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

# Records are NamedTuples, not dataclasses: podium-runtime imports this module on
# every command, and building a dataclass costs far more at import time.
_EMPTY: Mapping[str, str] = MappingProxyType({})


def read_only(mapping: Mapping[str, str]) -> MappingProxyType[str, str]:
    return MappingProxyType(dict(mapping))


# Configs cross process boundaries pickled (the fork server): let the read-only
# mappings travel too, as read-only mappings.
copyreg.pickle(MappingProxyType, lambda m: (read_only, (dict(m),)))

DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


class User(NamedTuple):
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None


class Capabilities(NamedTuple):
    """Capability names (``CAP_*``) per set."""

    bounding: frozenset[str] = frozenset(DEFAULT_CAPABILITIES)
    effective: frozenset[str] = frozenset(DEFAULT_CAPABILITIES)
    inheritable: frozenset[str] = frozenset()
    permitted: frozenset[str] = frozenset(DEFAULT_CAPABILITIES)
    ambient: frozenset[str] = frozenset()


class Rlimit(NamedTuple):
    type: str  # "RLIMIT_NOFILE"
    soft: int
    hard: int


class Process(NamedTuple):
    args: tuple[str, ...]
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    cwd: str = "/"
    user: User = User()
    capabilities: Capabilities | None = Capabilities()  # None: leave them as they are
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    terminal: bool = False
    oom_score_adj: int | None = None
    console_size: tuple[int, int] | None = None  # (height, width) of the terminal


class Overlay(NamedTuple):
    """An overlayfs root: read-only image layers (top first) under a private upper dir."""

    lower: tuple[Path, ...]
    upper: Path
    work: Path


class Root(NamedTuple):
    path: Path  # absolute; for an overlay root, the directory it is mounted on
    readonly: bool = False
    overlay: Overlay | None = None


class Mount(NamedTuple):
    destination: str  # absolute path inside the container
    type: str = ""  # "proc", "tmpfs", "bind", ... ("" for a bind mount)
    source: str = ""
    options: tuple[str, ...] = ()


class Namespace(NamedTuple):
    type: str  # "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"
    path: str | None = None  # join this namespace instead of creating one


class IDMapping(NamedTuple):
    container_id: int
    host_id: int
    size: int


class Memory(NamedTuple):
    limit: int | None = None  # bytes
    swap: int | None = None  # memory + swap, bytes (OCI's meaning); -1 unlimited
    reservation: int | None = None


class Cpu(NamedTuple):
    shares: int | None = None  # v1 cpu.shares (2..262144); mapped to cpu.weight on v2
    quota: int | None = None  # microseconds per period; -1 unlimited
    period: int | None = None  # microseconds
    cpus: str | None = None  # cpuset list "0-1"
    mems: str | None = None


class Pids(NamedTuple):
    limit: int | None = None  # -1 or 0: unlimited


class DeviceRule(NamedTuple):
    """A linux.resources.devices entry (allow or deny access to device numbers)."""

    allow: bool
    type: str = "a"  # "a", "c", "b"
    major: int | None = None  # None: any
    minor: int | None = None
    access: str = "rwm"


class Resources(NamedTuple):
    memory: Memory = Memory()
    cpu: Cpu = Cpu()
    pids: Pids = Pids()
    devices: tuple[DeviceRule, ...] = ()


class Device(NamedTuple):
    """A linux.devices entry: a device node created in the container's /dev."""

    path: str
    type: str  # "c", "b", "u", "p"
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


class Hook(NamedTuple):
    """One OCI hook: a program run at a point of the container's life (``runtime.hooks``)."""

    path: str  # absolute
    args: tuple[str, ...] = ()  # argv as given, args[0] included; empty: just the path
    env: tuple[str, ...] = ()  # the hook's whole environment, "NAME=VALUE"
    timeout: int | None = None  # seconds; None: no limit


class Hooks(NamedTuple):
    """The config's hooks, per point, in the order they run."""

    prestart: tuple[Hook, ...] = ()  # deprecated; runs just before create_runtime
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


# (config.json name, Hooks field) per hook point, in the order of the lifecycle.
HOOK_POINTS: tuple[tuple[str, str], ...] = (
    ("prestart", "prestart"), ("createRuntime", "create_runtime"),
    ("createContainer", "create_container"), ("startContainer", "start_container"),
    ("poststart", "poststart"), ("poststop", "poststop"),
)


class SeccompArg(NamedTuple):
    """A comparison on one system call argument (``linux.seccomp.syscalls[].args[]``)."""

    argument: int  # which argument, 0..5 (the spec's "index")
    value: int  # for SCMP_CMP_MASKED_EQ: the mask
    op: str  # "SCMP_CMP_EQ", ...
    value_two: int = 0  # for SCMP_CMP_MASKED_EQ: what the masked argument must equal


class SeccompSyscall(NamedTuple):
    names: tuple[str, ...]
    action: str  # "SCMP_ACT_ALLOW", ...
    errno_ret: int | None = None  # for SCMP_ACT_ERRNO and SCMP_ACT_TRACE; None: EPERM
    args: tuple[SeccompArg, ...] = ()


class Seccomp(NamedTuple):
    """A ``linux.seccomp`` profile; the names are libseccomp's, as the OCI spec gives them."""

    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()  # "SCMP_ARCH_X86_64", ...; the native one is implied
    flags: tuple[str, ...] = ()  # "SECCOMP_FILTER_FLAG_TSYNC", ...
    syscalls: tuple[SeccompSyscall, ...] = ()


# runc's default mounts, as `podium-runtime spec` writes them and as containers built
# in code (image builds, the agent's pods) get them.
DEFAULT_MOUNTS: tuple[Mount, ...] = (
    Mount("/proc", "proc", "proc"),
    Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    Mount("/dev/pts", "devpts", "devpts",
          ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    Mount("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
    Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
)


class ContainerConfig(NamedTuple):
    oci_version: str
    process: Process
    root: Root
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    resources: Resources = Resources()
    cgroups_path: str | None = None
    masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS
    readonly_paths: tuple[str, ...] = DEFAULT_READONLY_PATHS
    sysctl: Mapping[str, str] = _EMPTY
    devices: tuple[Device, ...] = ()
    rootfs_propagation: str | None = None
    annotations: Mapping[str, str] = _EMPTY
    hooks: Hooks = Hooks()
    seccomp: Seccomp | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None
