"""Device nodes and links in a container's /dev.

The caller (``runtime.rootfs``) has mounted a fresh /dev and resolved every node's
path inside the root; this module only makes the nodes and the standard links.

A node is made with mknod(2). Where the kernel refuses (a user namespace may not
create device nodes), the host's node of the same path is bind-mounted onto an
empty file instead, which gives the container the same device.
"""

from __future__ import annotations

import os
import stat

from runtime import syscalls as sc
from runtime.errors import SetupError
from runtime.spec.model import Device

# What every container gets, as runc and crun give it.
DEFAULT_DEVICES: tuple[Device, ...] = (
    Device(path="/dev/null", type="c", major=1, minor=3),
    Device(path="/dev/zero", type="c", major=1, minor=5),
    Device(path="/dev/full", type="c", major=1, minor=7),
    Device(path="/dev/random", type="c", major=1, minor=8),
    Device(path="/dev/urandom", type="c", major=1, minor=9),
    Device(path="/dev/tty", type="c", major=5, minor=0),
)

# (link name in /dev, where it points)
DEV_LINKS: tuple[tuple[str, str], ...] = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
)

_TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def _reason(err: OSError) -> str:
    return os.strerror(err.errno) if err.errno else str(err)


def node_mode(device: Device) -> int:
    """The mknod(2) mode: file type bits and permission bits."""
    try:
        kind = _TYPE_BITS[device.type]
    except KeyError:
        raise SetupError(
            f"device {device.path}: type {device.type!r} is not c, u, b or p"
        ) from None
    return kind | (device.file_mode & 0o7777)


def create_nodes(nodes: list[tuple[str, Device]], sys: sc.Syscalls) -> None:
    """Make each device at its host-side path (already resolved inside the root)."""
    # The configured mode is exact: the init's umask must not narrow it.
    old_umask = os.umask(0)
    try:
        for host_path, device in nodes:
            create_node(host_path, device, sys)
    finally:
        os.umask(old_umask)


def create_node(host_path: str, device: Device, sys: sc.Syscalls) -> None:
    mode = node_mode(device)
    dev = os.makedev(device.major, device.minor) if device.type != "p" else 0
    try:
        try:
            sys.mknod(host_path, mode, dev)
        except FileNotFoundError:
            # A node in a sub-directory (/dev/net/tun) on a fresh /dev.
            os.makedirs(os.path.dirname(host_path), mode=0o755, exist_ok=True)
            sys.mknod(host_path, mode, dev)
    except FileExistsError:
        return  # already there (a /dev the config provides): keep it
    except PermissionError:
        _bind_host_node(host_path, device, sys)
        return
    except OSError as e:
        raise SetupError(f"mknod {device.path}: {_reason(e)}") from e
    if device.uid or device.gid:
        try:
            sys.chown(host_path, device.uid, device.gid)
        except OSError as e:
            raise SetupError(f"chown {device.path}: {_reason(e)}") from e


def _bind_host_node(host_path: str, device: Device, sys: sc.Syscalls) -> None:
    try:
        fd = os.open(host_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        os.close(fd)
        sys.mount(device.path, host_path, None, sc.MS_BIND, None)
    except OSError as e:
        raise SetupError(
            f"device {device.path}: mknod not permitted and bind from the host failed: "
            f"{_reason(e)}"
        ) from e


def create_links(dev_dir: str) -> None:
    """The /dev links programs expect, and /dev/ptmx pointing into the container's devpts."""
    for name, target in DEV_LINKS:
        try:
            os.symlink(target, f"{dev_dir}/{name}")
        except FileExistsError:
            pass  # the /dev the config provides has it already
        except OSError as e:
            raise SetupError(f"symlink /dev/{name}: {_reason(e)}") from e
    ptmx = f"{dev_dir}/ptmx"
    try:
        try:
            os.symlink("pts/ptmx", ptmx)
        except FileExistsError:
            # A ptmx node from elsewhere would hand out the host's ptys: replace it.
            if os.path.islink(ptmx) and os.readlink(ptmx) == "pts/ptmx":
                return
            os.unlink(ptmx)
            os.symlink("pts/ptmx", ptmx)
    except OSError as e:
        raise SetupError(f"symlink /dev/ptmx: {_reason(e)}") from e
