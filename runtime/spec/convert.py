"""OCI ``config.json`` -> ``ContainerConfig``: the one place external input is read.

Three kinds of field:
- supported: converted, with its type checked (errors name the field path);
- known to the OCI spec but not supported by podium: an error naming the field,
  when it carries a value (empty objects and lists are accepted as absent);
- unknown to the spec: ignored, as the spec requires of runtimes ("MUST ignore
  unknown properties"); they are returned as warnings so callers can log them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from runtime.errors import BundleError, ConfigError
from runtime.spec.model import (
    HOOK_POINTS,
    Capabilities,
    ContainerConfig,
    Cpu,
    Device,
    DeviceRule,
    Hook,
    Hooks,
    IDMapping,
    Memory,
    Mount,
    Namespace,
    Pids,
    Process,
    Resources,
    Rlimit,
    Root,
    Seccomp,
    SeccompArg,
    SeccompSyscall,
    User,
)

T = TypeVar("T")

# Per object: (supported keys, keys the spec defines that podium refuses when set).
_TOP = ({"ociVersion", "process", "root", "hostname", "domainname", "mounts", "annotations",
         "linux", "hooks"}, {"solaris", "windows", "vm", "zos"})
_HOOKS = ({name for name, _ in HOOK_POINTS}, set[str]())
_HOOK = ({"path", "args", "env", "timeout"}, set[str]())
_PROCESS = ({"terminal", "consoleSize", "user", "args", "env", "cwd", "capabilities",
             "rlimits", "noNewPrivileges", "oomScoreAdj", "apparmorProfile", "selinuxLabel"},
            {"commandLine", "ioPriority", "scheduler", "execCPUAffinity"})
_USER = ({"uid", "gid", "umask", "additionalGids"}, {"username"})
_CAPS = ({"bounding", "effective", "inheritable", "permitted", "ambient"}, set[str]())
_RLIMIT = ({"type", "soft", "hard"}, set[str]())
_CONSOLE_SIZE = ({"height", "width"}, set[str]())
_ROOT = ({"path", "readonly"}, set[str]())
_MOUNT = ({"destination", "type", "source", "options"}, {"uidMappings", "gidMappings"})
_LINUX = ({"namespaces", "uidMappings", "gidMappings", "devices", "cgroupsPath", "resources",
           "sysctl", "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel",
           "seccomp"},
          {"timeOffsets", "rdma", "unified", "intelRdt", "personality",
           "memoryPolicy", "netDevices"})
_NAMESPACE = ({"type", "path"}, set[str]())
_IDMAP = ({"containerID", "hostID", "size"}, set[str]())
_DEVICE = ({"path", "type", "major", "minor", "fileMode", "uid", "gid"}, set[str]())
_RESOURCES = ({"memory", "cpu", "pids", "devices"},
              {"blockIO", "hugepageLimits", "network", "rdma", "unified"})
_MEMORY = ({"limit", "reservation", "swap"},
           {"kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy",
            "checkBeforeUpdate"})
_CPU = ({"shares", "quota", "period", "cpus", "mems"},
        {"burst", "realtimeRuntime", "realtimePeriod", "idle"})
_PIDS = ({"limit"}, set[str]())
# listenerPath/listenerMetadata serve SCMP_ACT_NOTIFY, which needs a seccomp agent.
_SECCOMP = ({"defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls"},
            {"listenerPath", "listenerMetadata"})
_SYSCALL = ({"names", "action", "errnoRet", "args"}, set[str]())
_SECCOMP_ARG = ({"index", "value", "valueTwo", "op"}, set[str]())
_DEVICE_RULE = ({"allow", "type", "major", "minor", "access"}, set[str]())


class _Reader:
    """Reads one JSON object, naming every field by its path for errors."""

    def __init__(self, data: dict[str, Any], path: str, keys: tuple[set[str], set[str]],
                 warnings: list[str] | None = None) -> None:
        self.data = data
        self.path = path
        self.warnings: list[str] = [] if warnings is None else warnings
        supported, refused = keys
        for key, value in data.items():
            if key in supported:
                continue
            where = self._at(key)
            if key in refused:
                if value not in (None, {}, [], "", 0, False):
                    raise ConfigError(where, "not supported by podium")
            else:
                self.warnings.append(f"{where}: unknown field, ignored")

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type[T], default: T) -> T:
        value = self.data.get(key)
        if value is None:
            return default
        # bool is an int in Python; a JSON true is never a number here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self._at(key), f"must be {_kind_name(kind)}, got {json.dumps(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(f"{self._at(key)}[{i}]", "must be a string")
        return tuple(items)

    def ints(self, key: str) -> tuple[int, ...]:
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, int) or isinstance(item, bool):
                raise ConfigError(f"{self._at(key)}[{i}]", "must be an integer")
        return tuple(items)

    def child(self, key: str, keys: tuple[set[str], set[str]]) -> _Reader:
        return _Reader(self.get(key, dict, {}), self._at(key), keys, self.warnings)

    def children(self, key: str, keys: tuple[set[str], set[str]]) -> list[_Reader]:
        readers = []
        for i, item in enumerate(self.get(key, list, [])):
            if not isinstance(item, dict):
                raise ConfigError(f"{self._at(key)}[{i}]", "must be an object")
            readers.append(_Reader(item, f"{self._at(key)}[{i}]", keys, self.warnings))
        return readers

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", list: "a list",
            dict: "an object"}.get(kind, kind.__name__)


class Converted(NamedTuple):
    config: ContainerConfig
    warnings: tuple[str, ...]


def load_bundle(bundle: Path) -> Converted:
    """Read ``bundle/config.json``; root.path is resolved against the bundle."""
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle}: no such directory")
    config_path = bundle / "config.json"
    try:
        text = config_path.read_text()
    except FileNotFoundError:
        raise BundleError(f"bundle {bundle}: no config.json") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("", f"{config_path}: invalid JSON: {e.msg} at line {e.lineno} "
                              f"column {e.colno}") from None
    converted = convert(data, bundle)
    if not converted.config.root.path.is_dir():
        raise BundleError(f"bundle {bundle}: root.path {converted.config.root.path}: "
                          "no such directory")
    return converted


def convert(data: object, bundle: Path) -> Converted:
    """Convert parsed config.json into the internal form (validation follows separately)."""
    if not isinstance(data, dict):
        raise ConfigError("", "config.json must hold a JSON object")
    top = _Reader(data, "", _TOP)
    oci_version = top.get("ociVersion", str, "")
    if not top.has("process"):
        raise ConfigError("process", "missing (podium needs a process to run)")
    if not top.has("root"):
        raise ConfigError("root", "missing")
    process = _process(top.child("process", _PROCESS))
    root_r = top.child("root", _ROOT)
    root_path = Path(root_r.get("path", str, ""))
    if not str(root_path):
        raise ConfigError("root.path", "missing")
    root = Root(path=(bundle / root_path).resolve() if not root_path.is_absolute() else root_path,
                readonly=root_r.get("readonly", bool, False))
    mounts = tuple(_mount(m, bundle) for m in top.children("mounts", _MOUNT))
    annotations = top.get("annotations", dict, {})
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise ConfigError(f"annotations.{key}", "must be a string")
    config = ContainerConfig(
        oci_version=oci_version,
        process=process,
        root=root,
        hostname=top.get("hostname", str, "") or None,
        domainname=top.get("domainname", str, "") or None,
        mounts=mounts,
        annotations=dict(annotations),
    )
    if top.has("linux"):
        config = _linux(top.child("linux", _LINUX), config)
    if top.has("hooks"):
        config = config._replace(hooks=_hooks(top.child("hooks", _HOOKS)))
    return Converted(config, tuple(top.warnings))


def _hooks(r: _Reader) -> Hooks:
    def hook(h: _Reader) -> Hook:
        # A timeout of 0 is kept (not read as absent) so validation can refuse it.
        return Hook(path=h.get("path", str, ""), args=h.strings("args"), env=h.strings("env"),
                    timeout=h.get("timeout", int, 0) if h.has("timeout") else None)

    return Hooks(**{field: tuple(hook(h) for h in r.children(name, _HOOK))
                    for name, field in HOOK_POINTS})


def _mount(m: _Reader, bundle: Path) -> Mount:
    options = m.strings("options")
    source = m.get("source", str, "")
    mount_type = m.get("type", str, "")
    # The spec: a bind mount's relative source is relative to the bundle.
    if source and not source.startswith("/") and (
            mount_type == "bind" or "bind" in options or "rbind" in options):
        source = str(bundle / source)
    return Mount(destination=m.get("destination", str, ""), type=mount_type, source=source,
                 options=options)


def _process(r: _Reader) -> Process:
    for refused in ("apparmorProfile", "selinuxLabel"):
        if r.get(refused, str, ""):
            raise ConfigError(f"process.{refused}",
                              "podium does not apply AppArmor or SELinux labels")
    user_r = r.child("user", _USER)
    umask = user_r.get("umask", int, -1)
    user = User(uid=user_r.get("uid", int, 0), gid=user_r.get("gid", int, 0),
                additional_gids=user_r.ints("additionalGids"),
                umask=None if umask < 0 else umask)
    # No capabilities object: Docker's default set, as Docker would give (runc would
    # leave the caller's full set, which is never what a container should get).
    capabilities = Capabilities()
    if r.has("capabilities"):
        c = r.child("capabilities", _CAPS)
        capabilities = Capabilities(
            bounding=frozenset(c.strings("bounding")),
            effective=frozenset(c.strings("effective")),
            inheritable=frozenset(c.strings("inheritable")),
            permitted=frozenset(c.strings("permitted")),
            ambient=frozenset(c.strings("ambient")),
        )
    rlimits = tuple(
        Rlimit(type=x.get("type", str, ""), soft=x.get("soft", int, 0), hard=x.get("hard", int, 0))
        for x in r.children("rlimits", _RLIMIT)
    )
    oom = r.get("oomScoreAdj", int, -10000)
    return Process(
        args=r.strings("args"),
        env=r.strings("env"),
        cwd=r.get("cwd", str, "/"),
        user=user,
        capabilities=capabilities,
        rlimits=rlimits,
        no_new_privileges=r.get("noNewPrivileges", bool, False),
        terminal=r.get("terminal", bool, False),
        oom_score_adj=None if oom == -10000 else oom,
        console_size=_console_size(r),
    )


def _console_size(r: _Reader) -> tuple[int, int] | None:
    if not r.has("consoleSize"):
        return None
    c = r.child("consoleSize", _CONSOLE_SIZE)
    size = (c.get("height", int, 0), c.get("width", int, 0))
    for key, value in zip(("height", "width"), size, strict=True):
        if not 0 <= value <= 0xFFFF:  # the kernel's struct winsize holds unsigned shorts
            raise ConfigError(f"{c.path}.{key}", f"{value} is not between 0 and 65535")
    # runc's rule: a size with a zero in it leaves the terminal's own size.
    return size if all(size) else None


def _linux(r: _Reader, config: ContainerConfig) -> ContainerConfig:
    if r.get("mountLabel", str, ""):
        raise ConfigError("linux.mountLabel", "podium does not apply SELinux mount labels")
    namespaces = tuple(
        Namespace(type=n.get("type", str, ""), path=n.get("path", str, "") or None)
        for n in r.children("namespaces", _NAMESPACE)
    )

    def mappings(key: str) -> tuple[IDMapping, ...]:
        return tuple(
            IDMapping(container_id=m.get("containerID", int, 0), host_id=m.get("hostID", int, 0),
                      size=m.get("size", int, 0))
            for m in r.children(key, _IDMAP)
        )

    devices = tuple(
        Device(path=d.get("path", str, ""), type=d.get("type", str, ""),
               major=d.get("major", int, 0), minor=d.get("minor", int, 0),
               file_mode=d.get("fileMode", int, 0o666), uid=d.get("uid", int, 0),
               gid=d.get("gid", int, 0))
        for d in r.children("devices", _DEVICE)
    )
    sysctl = r.get("sysctl", dict, {})
    for key, value in sysctl.items():
        if not isinstance(value, str):
            raise ConfigError(f"linux.sysctl.{key}", "must be a string")
    changes: dict[str, Any] = dict(
        namespaces=namespaces,
        uid_mappings=mappings("uidMappings"),
        gid_mappings=mappings("gidMappings"),
        devices=devices,
        cgroups_path=r.get("cgroupsPath", str, "") or None,
        resources=_resources(r.child("resources", _RESOURCES)),
        sysctl=dict(sysctl),
        rootfs_propagation=r.get("rootfsPropagation", str, "") or None,
        seccomp=_seccomp(r.child("seccomp", _SECCOMP)) if r.get("seccomp", dict, {}) else None,
    )
    # Absent lists keep runc's defaults; an explicit [] turns them off.
    if "maskedPaths" in r.data:
        changes["masked_paths"] = r.strings("maskedPaths")
    if "readonlyPaths" in r.data:
        changes["readonly_paths"] = r.strings("readonlyPaths")
    return config._replace(**changes)


def _resources(r: _Reader) -> Resources:
    m = r.child("memory", _MEMORY)
    c = r.child("cpu", _CPU)
    p = r.child("pids", _PIDS)

    def opt(reader: _Reader, key: str) -> int | None:
        return reader.get(key, int, 0) if reader.has(key) else None

    rules = []
    for d in r.children("devices", _DEVICE_RULE):
        if not d.has("allow"):
            raise ConfigError(f"{d.path}.allow", "missing")
        rules.append(DeviceRule(allow=d.get("allow", bool, False), type=d.get("type", str, "a"),
                                major=opt(d, "major"), minor=opt(d, "minor"),
                                access=d.get("access", str, "rwm")))
    return Resources(
        memory=Memory(limit=opt(m, "limit"), swap=opt(m, "swap"),
                      reservation=opt(m, "reservation")),
        cpu=Cpu(shares=opt(c, "shares"), quota=opt(c, "quota"), period=opt(c, "period"),
                cpus=c.get("cpus", str, "") or None, mems=c.get("mems", str, "") or None),
        pids=Pids(limit=opt(p, "limit")),
        devices=tuple(rules),
    )


def convert_process(data: object, where: str = "process") -> Process:
    """An OCI Process object alone (``exec --process process.json``), validated."""
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a JSON object")
    process = _process(_Reader(data, where, _PROCESS))
    if not process.args:
        raise ConfigError(f"{where}.args", "must name the program to run")
    return process


def _seccomp(r: _Reader) -> Seccomp:
    def opt(reader: _Reader, key: str) -> int | None:
        return reader.get(key, int, 0) if reader.has(key) else None

    if not r.has("defaultAction"):
        raise ConfigError(f"{r.path}.defaultAction", "missing")
    syscalls = []
    for s in r.children("syscalls", _SYSCALL):
        if not s.has("action"):
            raise ConfigError(f"{s.path}.action", "missing")
        args = []
        for a in s.children("args", _SECCOMP_ARG):
            for key in ("index", "value", "op"):
                if not a.has(key):
                    raise ConfigError(f"{a.path}.{key}", "missing")
            args.append(SeccompArg(argument=a.get("index", int, 0), value=a.get("value", int, 0),
                                   op=a.get("op", str, ""),
                                   value_two=a.get("valueTwo", int, 0)))
        syscalls.append(SeccompSyscall(names=s.strings("names"), action=s.get("action", str, ""),
                                       errno_ret=opt(s, "errnoRet"), args=tuple(args)))
    profile = Seccomp(default_action=r.get("defaultAction", str, ""),
                      default_errno_ret=opt(r, "defaultErrnoRet"),
                      architectures=r.strings("architectures"), flags=r.strings("flags"),
                      syscalls=tuple(syscalls))
    # Names this machine's libseccomp does not know are skipped when the filter is
    # built; say so here, where the caller logs warnings. Only a profile pays for it.
    from runtime.seccomp import unknown_syscalls

    r.warnings.extend(w.replace("linux.seccomp", r.path, 1) for w in unknown_syscalls(profile))
    return profile


def convert_seccomp(data: object, where: str = "linux.seccomp") -> Seccomp:
    """A ``linux.seccomp`` object alone (a profile file, the one kept for ``exec``)."""
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a JSON object")
    return _seccomp(_Reader(data, where, _SECCOMP))
