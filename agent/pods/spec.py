"""One container of a Pod → the runtime's ``ContainerConfig``: a pure conversion.

Everything the conversion needs from the world comes in as arguments: the image's
facts (its layer dirs and config), the pod's sandbox facts (network namespace path,
hosts/hostname/resolv.conf dir, the pod's directory, its volumes), and a function
that resolves a user name in the image. Nothing here touches the disk, so every
Kubernetes rule (Entrypoint/Cmd, env, quantities, volume mounts) is tested without
root.

What the sandbox shares: the pod's containers (init containers too) join its
network, IPC and UTS namespaces by path (so they share ``localhost``, SysV IPC and
POSIX message queues, and the hostname, set on the UTS namespace when it was made);
each gets its own pid, mount and cgroup namespaces. A sandbox that holds no IPC or
UTS namespace gives each container new ones (the pod's name as hostname).
``hostNetwork`` keeps the node's network and UTS namespaces (and hostname),
``hostPID``/``hostIPC`` the node's pid/IPC namespace.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from agent.pods.errors import PodSpecError
from agent.pods.images import PULL_POLICIES
from agent.pods.probes import container_probes
from proto.podium.v1 import pod_pb2
from proto.quantity import QuantityError, parse_bytes, parse_milli_cpu
from runtime.spec.model import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MOUNTS,
    Capabilities,
    ContainerConfig,
    Cpu,
    Memory,
    Mount,
    Namespace,
    Overlay,
    Process,
    Resources,
    Root,
    User,
)

OCI_VERSION = "1.2.0"
CPU_PERIOD_US = 100_000  # the kubelet's CFS period
MIN_QUOTA_US = 1000  # the kernel refuses less
MIN_SHARES, MAX_SHARES = 2, 262_144
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

POD_FILES = ("hosts", "hostname", "resolv.conf")  # bind-mounted on /etc/<name>

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a DNS label, as Kubernetes wants
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_NUMERIC_USER = re.compile(r"^([0-9]+):([0-9]+)$")
_EXPAND = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ImageFacts(NamedTuple):
    """What the conversion needs of the container's image."""

    lower: tuple[Path, ...]  # unpacked layers, top first
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""  # the image's USER


class VolumeSource(NamedTuple):
    """One of the pod's volumes, resolved to a host path."""

    name: str
    kind: str  # "emptyDir" or "hostPath"
    path: Path  # on the host; an emptyDir lives under the pod's directory
    medium: str = ""  # emptyDir: "" (disk) or "Memory" (a tmpfs the worker mounts on path)
    size_limit: int | None = None  # emptyDir: bytes
    host_path_type: str = ""  # hostPath: "", "Directory", "DirectoryOrCreate", ...


class SandboxFacts(NamedTuple):
    """What the pod's sandbox gives each container."""

    pod_dir: Path  # <pods_dir>/<uid>: per-container dirs and emptyDirs live under it
    netns: Path | None  # join this network namespace; None with hostNetwork
    files: Path | None  # dir holding hosts, hostname, resolv.conf; None: leave /etc alone
    cgroup_parent: str  # the agent's; a pod's containers go under <parent>/pod<uid>
    volumes: Mapping[str, VolumeSource]
    ipc: Path | None = None  # join this IPC namespace; None: a new one per container
    uts: Path | None = None  # join this UTS namespace (hostname set); None: a new one


UserLookup = Callable[[str], User]  # an image USER value → uid, gid, groups


HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                   "CharDevice", "BlockDevice")


# --- the pod as a whole ---------------------------------------------------------------


def plan_volumes(pod: pod_pb2.Pod, pod_dir: Path) -> dict[str, VolumeSource]:
    """The pod's volumes by name, each checked and given its host path."""
    volumes: dict[str, VolumeSource] = {}
    for i, volume in enumerate(pod.spec.volumes):
        where = f"spec.volumes[{i}]"
        _check_name(volume.name, f"{where}.name")
        if volume.name in volumes:
            raise PodSpecError(f"{where}.name", f"duplicate volume {volume.name!r}")
        source = volume.WhichOneof("source")
        if source == "empty_dir":
            empty = volume.empty_dir
            if empty.medium not in ("", "Memory"):
                raise PodSpecError(f"{where}.emptyDir.medium",
                                   f'"{empty.medium}" is not "" or "Memory"')
            size = None
            if empty.size_limit:
                size = _bytes(empty.size_limit, f"{where}.emptyDir.sizeLimit")
            volumes[volume.name] = VolumeSource(volume.name, "emptyDir",
                                                pod_dir / "volumes" / volume.name,
                                                empty.medium, size)
        elif source == "host_path":
            host = volume.host_path
            if not host.path.startswith("/"):
                raise PodSpecError(f"{where}.hostPath.path", f'"{host.path}" is not absolute')
            if host.type not in HOST_PATH_TYPES:
                raise PodSpecError(f"{where}.hostPath.type", f'"{host.type}" is not one of '
                                   + ", ".join(t for t in HOST_PATH_TYPES if t))
            volumes[volume.name] = VolumeSource(volume.name, "hostPath",
                                                Path(posixpath.normpath(host.path)),
                                                host_path_type=host.type)
        else:
            raise PodSpecError(where, "needs a source (emptyDir or hostPath)")
    return volumes


def validate_pod(pod: pod_pb2.Pod, pod_dir: Path) -> dict[str, VolumeSource]:
    """Every check that needs no image: names, restart policy, volumes, and each
    container's env, resources, mounts and security context. Returns the volumes."""
    if not pod.metadata.name:
        raise PodSpecError("metadata.name", "is required")
    if not pod.metadata.uid:
        raise PodSpecError("metadata.uid", "is required")
    if pod.spec.restart_policy not in ("", "Always", "OnFailure", "Never"):
        raise PodSpecError("spec.restartPolicy",
                           f'"{pod.spec.restart_policy}" is not Always, OnFailure or Never')
    if not pod.spec.containers:
        raise PodSpecError("spec.containers", "needs at least one container")
    volumes = plan_volumes(pod, pod_dir)
    seen: set[str] = set()
    every = [("initContainers", i, c) for i, c in enumerate(pod.spec.init_containers)]
    every += [("containers", i, c) for i, c in enumerate(pod.spec.containers)]
    for kind, i, container in every:
        where = f"spec.{kind}[{i}]"
        _check_name(container.name, f"{where}.name")
        if container.name in seen:
            raise PodSpecError(f"{where}.name", f"duplicate container {container.name!r}")
        seen.add(container.name)
        if not container.image:
            raise PodSpecError(f"{where}.image", "is required")
        if container.image_pull_policy not in ("", *PULL_POLICIES):
            raise PodSpecError(f"{where}.imagePullPolicy", f'"{container.image_pull_policy}"'
                               " is not Always, IfNotPresent or Never")
        if kind == "initContainers":
            for probe in ("liveness_probe", "readiness_probe", "startup_probe"):
                if container.HasField(probe):
                    raise PodSpecError(f"{where}.{_camel(probe)}",
                                       "must not be set for init containers")
        if container.tty or container.stdin:
            field = "tty" if container.tty else "stdin"
            raise PodSpecError(f"{where}.{field}", "not supported yet")
        container_env(container, (), where)
        container_resources(container, where)
        container_mounts(container, volumes, where)
        _security(pod, container, where)
        container_probes(container, where)
    return volumes


# --- one container --------------------------------------------------------------------


def container_config(
    pod: pod_pb2.Pod,
    index: int,
    image: ImageFacts,
    sandbox: SandboxFacts,
    instance_dir: Path,
    lookup_user: UserLookup,
    init: bool = False,
) -> ContainerConfig:
    """``pod.spec.containers[index]`` (``initContainers`` with ``init``) as a
    ``ContainerConfig``.

    ``instance_dir`` holds this run of the container: ``rootfs`` (the overlay's mount
    point), ``upper`` and ``work``; the caller makes them.
    """
    if init:
        container, where = pod.spec.init_containers[index], f"spec.initContainers[{index}]"
    else:
        container, where = pod.spec.containers[index], f"spec.containers[{index}]"
    env = container_env(container, image.env, where)
    args = process_args(container, image, env, where)
    cwd = container.working_dir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise PodSpecError(f"{where}.workingDir", f'"{cwd}" is not absolute')
    user, caps, no_new_privs, readonly = _security(pod, container, where, image, lookup_user)
    spec = pod.spec
    namespaces = [Namespace("mount"), Namespace("cgroup")]
    if not spec.host_pid:
        namespaces.append(Namespace("pid"))
    if not spec.host_ipc:
        namespaces.append(Namespace("ipc", _path(sandbox.ipc)))
    hostname = None
    if not spec.host_network:
        if sandbox.netns is None:
            raise PodSpecError("spec.hostNetwork", "false, but the sandbox has no network")
        namespaces += [Namespace("network", str(sandbox.netns)),
                       Namespace("uts", _path(sandbox.uts))]
        if sandbox.uts is None:
            hostname = pod_hostname(pod)
    return ContainerConfig(
        oci_version=OCI_VERSION,
        process=Process(args=tuple(args), env=tuple(env), cwd=cwd, user=user,
                        capabilities=caps, no_new_privileges=no_new_privs),
        root=Root(path=instance_dir / "rootfs", readonly=readonly, overlay=Overlay(
            lower=image.lower, upper=instance_dir / "upper", work=instance_dir / "work")),
        hostname=hostname,
        mounts=DEFAULT_MOUNTS + pod_file_mounts(sandbox.files)
        + container_mounts(container, sandbox.volumes, where),
        namespaces=tuple(namespaces),
        resources=container_resources(container, where),
        cgroups_path=container_cgroup(sandbox.cgroup_parent, pod.metadata.uid, container.name),
        # A plain dict, not the model's read-only default: the config is pickled to the
        # fork server, and a mappingproxy cannot be.
        sysctl={},
        annotations={
            "io.kubernetes.pod.name": pod.metadata.name,
            "io.kubernetes.pod.namespace": pod.metadata.namespace or "default",
            "io.kubernetes.pod.uid": pod.metadata.uid,
            "io.kubernetes.container.name": container.name,
        },
    )


def pod_hostname(pod: pod_pb2.Pod) -> str:
    """``spec.hostname``, else the pod's name cut to one DNS label (as Kubernetes cuts it)."""
    return pod.spec.hostname or pod.metadata.name[:63].rstrip("-.")


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def pod_cgroup(cgroup_parent: str, pod_uid: str) -> str:
    return f"{cgroup_parent.strip('/')}/pod{pod_uid}"


def container_cgroup(cgroup_parent: str, pod_uid: str, name: str) -> str:
    return f"{pod_cgroup(cgroup_parent, pod_uid)}/{name}"


def container_env(container: pod_pb2.Container, image_env: Sequence[str],
                  where: str) -> list[str]:
    """The image's env, then the container's (a name set twice keeps its first place);
    ``$(NAME)`` in a value refers to a variable defined before it."""
    values: dict[str, str] = {}
    for entry in image_env:
        name, _, value = entry.partition("=")
        values[name] = value
    for i, var in enumerate(container.env):
        field = f"{where}.env[{i}]"
        if not _ENV_NAME.match(var.name):
            raise PodSpecError(f"{field}.name", f'"{var.name}" is not a valid variable name')
        if var.HasField("value_from"):
            raise PodSpecError(f"{field}.valueFrom", "not supported (give a value)")
        values[var.name] = expand(var.value, values)
    if not any(name == "PATH" for name in values):
        values = {"PATH": DEFAULT_PATH.partition("=")[2], **values}
    return [f"{name}={value}" for name, value in values.items()]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references: known names replaced, ``$$`` → ``$``,
    anything else left as written."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return _EXPAND.sub(one, text)


def process_args(container: pod_pb2.Container, image: ImageFacts, env: Sequence[str],
                 where: str) -> list[str]:
    """Kubernetes' rules over the image's Entrypoint and Cmd, then ``$(VAR)`` expansion."""
    from runtime.images import ProcessArgsError, resolve_process_args

    try:
        argv = resolve_process_args(image.entrypoint, image.cmd,
                                    list(container.command), list(container.args))
    except ProcessArgsError as e:
        raise PodSpecError(f"{where}.command", str(e)) from None
    values = dict(entry.partition("=")[::2] for entry in env)
    if container.command or container.args:
        return [expand(arg, values) for arg in argv]
    return argv  # the image's own words are not Kubernetes' to expand


def container_resources(container: pod_pb2.Container, where: str) -> Resources:
    """limits.memory → memory limit (swap none beyond it); limits.cpu → CFS quota over a
    100 ms period; requests.cpu (default: limits.cpu) → shares, milliCPU × 1024 / 1000."""
    res = container.resources
    for kind, values in (("limits", res.limits), ("requests", res.requests)):
        for name in values:
            if name not in ("cpu", "memory", "ephemeral-storage"):
                raise PodSpecError(f"{where}.resources.{kind}.{name}", "unsupported resource")
    memory = Memory()
    if "memory" in res.limits:
        limit = _bytes(res.limits["memory"], f"{where}.resources.limits.memory")
        if limit <= 0:
            raise PodSpecError(f"{where}.resources.limits.memory", "must be above 0")
        memory = Memory(limit=limit, swap=limit)
    if "memory" in res.requests:
        request = _bytes(res.requests["memory"], f"{where}.resources.requests.memory")
        if memory.limit is not None and request > memory.limit:
            raise PodSpecError(f"{where}.resources.requests.memory",
                               "must be less than or equal to the memory limit")
    quota = period = None
    limit_mcpu = None
    if "cpu" in res.limits:
        limit_mcpu = _milli_cpu(res.limits["cpu"], f"{where}.resources.limits.cpu")
        if limit_mcpu <= 0:
            raise PodSpecError(f"{where}.resources.limits.cpu", "must be above 0")
        quota = max(limit_mcpu * CPU_PERIOD_US // 1000, MIN_QUOTA_US)
        period = CPU_PERIOD_US
    request_mcpu = limit_mcpu or 0
    if "cpu" in res.requests:
        request_mcpu = _milli_cpu(res.requests["cpu"], f"{where}.resources.requests.cpu")
        if limit_mcpu is not None and request_mcpu > limit_mcpu:
            raise PodSpecError(f"{where}.resources.requests.cpu",
                               "must be less than or equal to the cpu limit")
    shares = min(max(request_mcpu * 1024 // 1000, MIN_SHARES), MAX_SHARES)
    return Resources(memory=memory, cpu=Cpu(shares=shares, quota=quota, period=period))


def pod_file_mounts(files: Path | None) -> tuple[Mount, ...]:
    if files is None:
        return ()
    return tuple(Mount(f"/etc/{name}", "bind", str(files / name), ("rbind", "rprivate"))
                 for name in POD_FILES)


def container_mounts(container: pod_pb2.Container, volumes: Mapping[str, VolumeSource],
                     where: str) -> tuple[Mount, ...]:
    mounts: list[Mount] = []
    seen: set[str] = set()
    for i, vm in enumerate(container.volume_mounts):
        field = f"{where}.volumeMounts[{i}]"
        volume = volumes.get(vm.name)
        if volume is None:
            raise PodSpecError(f"{field}.name", f'no volume "{vm.name}" in spec.volumes')
        if not vm.mount_path.startswith("/"):
            raise PodSpecError(f"{field}.mountPath", f'"{vm.mount_path}" is not absolute')
        dest = posixpath.normpath(vm.mount_path)
        if dest in seen:
            raise PodSpecError(f"{field}.mountPath", f'"{dest}" is mounted twice')
        seen.add(dest)
        source = volume.path
        if vm.sub_path:
            parts = vm.sub_path.split("/")
            if vm.sub_path.startswith("/") or ".." in parts:
                raise PodSpecError(f"{field}.subPath",
                                   f'"{vm.sub_path}" must be relative, without ".."')
            source = source.joinpath(*[p for p in parts if p not in ("", ".")])
        options = ["rbind", "rprivate"] + (["ro"] if vm.read_only else [])
        mounts.append(Mount(dest, "bind", str(source), tuple(options)))
    return tuple(mounts)


def _security(pod: pod_pb2.Pod, container: pod_pb2.Container, where: str,
              image: ImageFacts | None = None, lookup_user: UserLookup | None = None,
              ) -> tuple[User, Capabilities, bool, bool]:
    """uid/gid (image USER, then runAsUser/runAsGroup, container over pod),
    capabilities add/drop, allowPrivilegeEscalation, readOnlyRootFilesystem."""
    psc, sc = pod.spec.security_context, container.security_context
    field = f"{where}.securityContext"
    if sc.HasField("privileged") and sc.privileged:
        raise PodSpecError(f"{field}.privileged", "not supported")
    caps = set(DEFAULT_CAPABILITIES)
    from runtime.spec.capabilities import CAPABILITIES

    for kind, names in (("drop", sc.capabilities.drop), ("add", sc.capabilities.add)):
        for j, name in enumerate(names):
            full = name.upper() if name.upper().startswith("CAP_") else f"CAP_{name.upper()}"
            if name.upper() == "ALL" and kind == "drop":
                caps.clear()
                continue
            if full not in CAPABILITIES:
                raise PodSpecError(f"{field}.capabilities.{kind}[{j}]",
                                   f'"{name}" is not a capability')
            if kind == "drop":
                caps.discard(full)
            else:
                caps.add(full)
    user = User()
    if image is not None and lookup_user is not None and image.user:
        numeric = _NUMERIC_USER.match(image.user)
        user = (User(int(numeric[1]), int(numeric[2])) if numeric
                else lookup_user(image.user))
    uid = sc.run_as_user if sc.HasField("run_as_user") else (
        psc.run_as_user if psc.HasField("run_as_user") else None)
    gid = sc.run_as_group if sc.HasField("run_as_group") else (
        psc.run_as_group if psc.HasField("run_as_group") else None)
    for value, name in ((uid, "runAsUser"), (gid, "runAsGroup")):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise PodSpecError(f"{field}.{name}", f"{value} is not a valid id")
    if uid is not None:
        user = user._replace(uid=uid, gid=0 if gid is None else gid, additional_gids=())
    elif gid is not None:
        user = user._replace(gid=gid)
    groups = tuple(psc.supplemental_groups) + (
        (psc.fs_group,) if psc.HasField("fs_group") else ())
    if groups:
        user = user._replace(additional_gids=tuple(dict.fromkeys(
            user.additional_gids + groups)))
    non_root = sc.run_as_non_root if sc.HasField("run_as_non_root") else (
        psc.run_as_non_root if psc.HasField("run_as_non_root") else False)
    if non_root and image is not None and user.uid == 0:
        raise PodSpecError(f"{field}.runAsNonRoot", "the container would run as root")
    no_new_privs = sc.HasField("allow_privilege_escalation") and not sc.allow_privilege_escalation
    readonly = sc.HasField("read_only_root_filesystem") and sc.read_only_root_filesystem
    frozen = frozenset(caps)
    return user, Capabilities(bounding=frozen, effective=frozen, permitted=frozen), \
        no_new_privs, readonly


def _check_name(name: str, field: str) -> None:
    if not name or len(name) > 63 or not _NAME.match(name):
        raise PodSpecError(field, f'"{name}" is not a DNS label (lower case letters, digits, '
                           "'-', at most 63)")


def _bytes(text: str, field: str) -> int:
    try:
        return parse_bytes(text)
    except QuantityError as e:
        raise PodSpecError(field, str(e)) from None


def _milli_cpu(text: str, field: str) -> int:
    try:
        return parse_milli_cpu(text)
    except QuantityError as e:
        raise PodSpecError(field, str(e)) from None
