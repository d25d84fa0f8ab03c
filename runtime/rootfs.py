"""The container's filesystem view, built by its init inside a new mount namespace.

The init calls three steps, in order:

    prepare_rootfs   before pivot_root: stop mount propagation to the host, mount the
                     root (overlayfs, or a bind of the directory onto itself), the
                     config's mounts, and /dev with its nodes and links
    enter_rootfs     pivot_root into the root, detach the old root
    finish_rootfs    container paths now: masked paths, read-only paths, read-only root

Every mount goes through the ``Syscalls`` seam, so a unit test can read the exact
steps. Every failure is a ``SetupError`` naming the step and the container path.

Mount destinations are resolved inside the root the way the container itself will
see them: a symlink in the image is followed as if the root were "/", so
``/etc -> /`` or ``../../..`` can never send a mount outside the root.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path

from runtime import devices
from runtime import syscalls as sc
from runtime.errors import SetupError
from runtime.spec.model import ContainerConfig, Device, Mount, Overlay, Root
from runtime.spec.mountopts import MountFlags, parse_mount_options

# Symlinks followed while resolving one path, as the kernel's own limit.
MAX_SYMLINKS = 40

# The page the kernel copies mount data into; overlay's lowerdir list must fit.
MOUNT_DATA_LIMIT = 4095

# What /dev gets when the config does not say (runc's default spec).
DEV_MOUNT = Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k"))
DEVPTS_MOUNT = Mount("/dev/pts", "devpts", "devpts",
                     ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"))
SHM_MOUNT = Mount("/dev/shm", "tmpfs", "shm",
                  ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k"))

# Per-mount flags a bind mount takes only through a second, remount call.
_PER_MOUNT_FLAGS = (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME
                    | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME | sc.MS_NOSYMFOLLOW)
_ATIME_FLAGS = sc.MS_NOATIME | sc.MS_RELATIME | sc.MS_STRICTATIME

# statvfs(3) f_flag bit -> mount(2) flag, for the flags a remount must repeat.
_STATVFS_FLAGS = (
    (os.ST_RDONLY, sc.MS_RDONLY),
    (os.ST_NOSUID, sc.MS_NOSUID),
    (os.ST_NODEV, sc.MS_NODEV),
    (os.ST_NOEXEC, sc.MS_NOEXEC),
    (os.ST_NOATIME, sc.MS_NOATIME),
    (os.ST_NODIRATIME, sc.MS_NODIRATIME),
    (os.ST_RELATIME, sc.MS_RELATIME),
)

_CGROUP2_MARKER = "/sys/fs/cgroup/cgroup.controllers"


# --- helpers -------------------------------------------------------------------------


def _reason(err: OSError) -> str:
    # The seam's messages already carry "mount X on Y: "; only the cause is wanted here.
    return os.strerror(err.errno) if err.errno else str(err)


def resolve_in_root(root: str, path: str) -> str:
    """The host path of container ``path``, following symlinks as if ``root`` were "/".

    ``..`` stops at the root, and an absolute link target starts again from it, so
    the answer is always ``root`` or below. Components that do not exist are kept
    as they are (the caller creates them). Raises OSError(ELOOP) on a link loop.
    """
    root = root.rstrip("/")
    pending = path.split("/")
    pending.reverse()
    resolved: list[str] = []
    links = 0
    # Index in ``resolved`` of the first component that does not exist: nothing
    # below it can be a symlink, so it is not looked up (until ".." climbs above it).
    missing_from: int | None = None
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
                if missing_from is not None and len(resolved) <= missing_from:
                    missing_from = None
            continue
        if missing_from is None:
            here = root + "/" + "/".join([*resolved, part])
            try:
                # One call says both "is it a link" and where it goes.
                target = os.readlink(here)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    missing_from = len(resolved)
                elif e.errno != errno.EINVAL:  # EINVAL: not a symlink
                    raise
            else:
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    resolved.clear()
                pending.extend(reversed(target.split("/")))
                continue
        resolved.append(part)
    return root + "".join("/" + p for p in resolved) or "/"


def mounted_flags(path: str) -> int:
    """The per-mount flags of the mount holding ``path``, as mount(2) flags.

    A bind remount replaces them all, and in a user namespace those inherited from
    the host are locked: a remount must repeat them or get EPERM.
    """
    f_flag = os.statvfs(path).f_flag
    flags = 0
    for st_bit, ms_bit in _STATVFS_FLAGS:
        if f_flag & st_bit:
            flags |= ms_bit
    if not flags & (sc.MS_NOATIME | sc.MS_RELATIME):
        flags |= sc.MS_STRICTATIME
    return flags


def _remount_bind(target: str, flags: int, sys: sc.Syscalls) -> None:
    """Apply per-mount ``flags`` to the bind mount at ``target``."""
    try:
        sys.mount("", target, None, sc.MS_BIND | sc.MS_REMOUNT | flags, None)
    except PermissionError:
        # Locked flags (user namespace): keep those the mount has, add the wanted ones.
        current = mounted_flags(target)
        if flags & _ATIME_FLAGS:
            current &= ~_ATIME_FLAGS
        sys.mount("", target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | current, None)


def _make_mountpoint(target: str, is_dir: bool) -> None:
    try:
        _create(target, is_dir)
    except FileExistsError:
        return
    except FileNotFoundError:
        # Parents below the last existing (already resolved) directory hold no symlinks.
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        try:
            _create(target, is_dir)
        except FileExistsError:
            pass


def _create(target: str, is_dir: bool) -> None:
    if is_dir:
        os.mkdir(target, 0o755)
    else:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        os.close(fd)


def _clean(destination: str) -> str:
    return posixpath.normpath("/" + destination.lstrip("/"))


def _propagation(name: str) -> int:
    flags = parse_mount_options((name,))
    if not flags.propagation or flags.flags or flags.data:
        raise SetupError(f"rootfsPropagation {name!r}: not a propagation mode")
    return flags.propagation


# --- overlay root ----------------------------------------------------------------------


def _escape_overlay_path(path: Path) -> str:
    text = str(path)
    if "," in text:
        # The kernel splits mount data on commas before overlayfs sees it.
        raise SetupError(f"overlay layer {text}: a path with ',' cannot be passed to overlayfs")
    # overlayfs splits lowerdir on ':' and takes '\' as its escape.
    return text.replace("\\", "\\\\").replace(":", "\\:")


def overlay_data(overlay: Overlay) -> str:
    """overlayfs' mount data: ``lowerdir=top:...:bottom,upperdir=...,workdir=...``."""
    if not overlay.lower:
        raise SetupError("overlay: needs at least one lower layer")
    lower = ":".join(_escape_overlay_path(p) for p in overlay.lower)
    data = (f"lowerdir={lower},upperdir={_escape_overlay_path(overlay.upper)},"
            f"workdir={_escape_overlay_path(overlay.work)}")
    if len(data) > MOUNT_DATA_LIMIT:
        raise SetupError(f"overlay: mount data is {len(data)} bytes, over the kernel's "
                         f"{MOUNT_DATA_LIMIT}: {len(overlay.lower)} layers are too many")
    return data


def mount_overlay(overlay: Overlay, target: Path, sys: sc.Syscalls) -> None:
    """Mount ``overlay`` on ``target`` (host side, e.g. to inspect or copy an image)."""
    try:
        sys.mount("overlay", str(target), "overlay", 0, overlay_data(overlay))
    except OSError as e:
        raise SetupError(f"mount overlay on {target}: {_reason(e)}") from e


def unmount(target: Path, sys: sc.Syscalls) -> None:
    """Detach the mount at ``target``; one that is already gone is not an error."""
    try:
        sys.umount2(str(target), sc.MNT_DETACH)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a mount point (any more)
            raise SetupError(f"unmount {target}: {_reason(e)}") from e


# --- prepare_rootfs ----------------------------------------------------------------------


def prepare_rootfs(config: ContainerConfig, sys: sc.Syscalls) -> None:
    """Build the container's tree under ``config.root.path``; see the module docstring."""
    root = str(config.root.path)
    requested = _propagation(config.rootfs_propagation) if config.rootfs_propagation else 0
    # Nothing mounted from here on may reach the host. A wanted shared or slave
    # root still receives the host's mounts (rslave); it is made shared afterwards.
    first = sc.MS_REC | (sc.MS_SLAVE if requested & (sc.MS_SLAVE | sc.MS_SHARED)
                         else sc.MS_PRIVATE)
    try:
        sys.mount("", "/", None, first, None)
    except OSError as e:
        raise SetupError(f"make / {'rslave' if first & sc.MS_SLAVE else 'rprivate'}: "
                         f"{_reason(e)}") from e
    _mount_root(config.root, sys)

    own_dev = next((m for m in config.mounts if _clean(m.destination) == "/dev"), None)
    if own_dev is None:
        _mount_entry(root, DEV_MOUNT, sys, cgroupns=False)
    cgroupns = config.namespace("cgroup") is not None
    for mount in config.mounts:
        _mount_entry(root, mount, sys, cgroupns=cgroupns)

    if own_dev is not None and _is_bind(own_dev):
        return  # a /dev brought from elsewhere is used as it is (runc does the same)
    destinations = {_clean(m.destination) for m in config.mounts}
    if "/dev/pts" not in destinations:
        _mount_entry(root, DEVPTS_MOUNT, sys, cgroupns=False)
    if "/dev/shm" not in destinations:
        _mount_entry(root, SHM_MOUNT, sys, cgroupns=False)
    _populate_dev(root, config.devices, sys)


def _mount_root(root: Root, sys: sc.Syscalls) -> None:
    path = str(root.path)
    try:
        if root.overlay is not None:
            sys.mount("overlay", path, "overlay", 0, overlay_data(root.overlay))
        else:
            # pivot_root needs the new root to be a mount point.
            sys.mount(path, path, None, sc.MS_BIND | sc.MS_REC, None)
    except OSError as e:
        kind = "overlay" if root.overlay is not None else "bind"
        raise SetupError(f"mount root ({kind}) on {path}: {_reason(e)}") from e


def _is_bind(mount: Mount) -> bool:
    try:
        flags = parse_mount_options(mount.options)
    except ValueError:
        return False
    return flags.is_bind or mount.type in ("bind", "")


def _mount_entry(root: str, mount: Mount, sys: sc.Syscalls, *, cgroupns: bool) -> None:
    dest = _clean(mount.destination)
    kind = mount.type or "bind"
    try:
        opts = parse_mount_options(mount.options)
    except ValueError as e:
        raise SetupError(f"mount {kind} on {dest}: {e}") from None
    bind = opts.is_bind or mount.type in ("bind", "")
    what = f"bind {mount.source} on {dest}" if bind else f"mount {kind} on {dest}"
    try:
        target = resolve_in_root(root, dest)
        if bind:
            is_dir = stat.S_ISDIR(os.stat(mount.source).st_mode)
            _make_mountpoint(target, is_dir)
            _bind(mount.source, target, opts, sys)
        else:
            _make_mountpoint(target, True)
            if mount.type == "cgroup":
                _mount_cgroup(dest, target, opts, sys, cgroupns=cgroupns)
            elif mount.type == "sysfs":
                _mount_sysfs(mount.source, target, opts, sys)
            else:
                sys.mount(mount.source or mount.type, target, mount.type, opts.flags,
                          opts.data or None)
        if opts.propagation:
            sys.mount("", target, None, opts.propagation, None)
    except OSError as e:
        raise SetupError(f"{what}: {_reason(e)}") from e


def _bind(source: str, target: str, opts: MountFlags, sys: sc.Syscalls) -> None:
    sys.mount(source, target, None, sc.MS_BIND | (opts.flags & sc.MS_REC), None)
    # mount(2) ignores ro/nosuid/... on the bind itself; they take a remount.
    extra = opts.flags & _PER_MOUNT_FLAGS
    if extra:
        _remount_bind(target, extra, sys)


def _mount_sysfs(source: str, target: str, opts: MountFlags, sys: sc.Syscalls) -> None:
    try:
        sys.mount(source or "sysfs", target, "sysfs", opts.flags, opts.data or None)
    except PermissionError:
        # A user namespace without its own network namespace may not mount sysfs:
        # show the host's, with the same restrictions.
        sys.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC, None)
        extra = opts.flags & _PER_MOUNT_FLAGS
        if extra:
            _remount_bind(target, extra, sys)


def _mount_cgroup(dest: str, target: str, opts: MountFlags, sys: sc.Syscalls, *,
                  cgroupns: bool) -> None:
    if not os.path.exists(_CGROUP2_MARKER):
        raise SetupError(f"mount cgroup on {dest}: only cgroup v2 hosts can mount cgroups "
                         "inside a container; drop this mount")
    if cgroupns:
        # A cgroup namespace makes cgroup2's root the container's own cgroup.
        sys.mount("cgroup2", target, "cgroup2", opts.flags, opts.data or None)
        return
    # Without one, a fresh cgroup2 mount would show the whole host tree: show only
    # the container's own cgroup, and always read-only, since writing its own
    # limits (memory.max...) would let the container lift them.
    source = "/sys/fs/cgroup" + _own_cgroup(dest)
    sys.mount(source, target, None, sc.MS_BIND | sc.MS_REC, None)
    _remount_bind(target, (opts.flags & _PER_MOUNT_FLAGS) | sc.MS_RDONLY, sys)


def _own_cgroup(dest: str) -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip().rstrip("/")
    raise SetupError(f"mount cgroup on {dest}: /proc/self/cgroup has no cgroup v2 entry")


def _populate_dev(root: str, extra: tuple[Device, ...], sys: sc.Syscalls) -> None:
    dev_dir = resolve_in_root(root, "/dev")
    configured = {_clean(d.path) for d in extra}
    # A configured device replaces the default of the same path.
    wanted = [d for d in devices.DEFAULT_DEVICES if d.path not in configured] + list(extra)
    devices.create_nodes([(resolve_in_root(root, d.path), d) for d in wanted], sys)
    devices.create_links(dev_dir)


# --- enter_rootfs ------------------------------------------------------------------------


def enter_rootfs(config: ContainerConfig, sys: sc.Syscalls) -> None:
    """pivot_root into ``config.root.path`` and drop the old root."""
    root = str(config.root.path)
    try:
        os.chdir(root)
        # pivot_root(".", ".") stacks the old root on top of the new one at "/",
        # so no directory for it is needed inside the image.
        sys.pivot_root(".", ".")
        # The old root may still be a slave of the host's mounts; rslave makes sure
        # the detach below is not propagated anywhere.
        sys.mount("", ".", None, sc.MS_SLAVE | sc.MS_REC, None)
        sys.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    except OSError as e:
        raise SetupError(f"pivot_root into {root}: {_reason(e)}") from e
    if config.rootfs_propagation:
        flags = _propagation(config.rootfs_propagation)
        if flags != sc.MS_REC | sc.MS_PRIVATE:  # already so since prepare_rootfs
            try:
                sys.mount("", "/", None, flags, None)
            except OSError as e:
                raise SetupError(f"make / {config.rootfs_propagation}: {_reason(e)}") from e


# --- finish_rootfs -----------------------------------------------------------------------


def finish_rootfs(config: ContainerConfig, sys: sc.Syscalls) -> None:
    """Masked paths, read-only paths and a read-only root (paths are the container's)."""
    for path in config.masked_paths:
        _mask(path, sys)
    for path in config.readonly_paths:
        _make_readonly(path, sys)
    if config.root.readonly:
        try:
            _remount_bind("/", sc.MS_RDONLY, sys)
        except OSError as e:
            raise SetupError(f"remount / read-only: {_reason(e)}") from e


def _mask(path: str, sys: sc.Syscalls) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing to hide
    except OSError as e:
        raise SetupError(f"mask {path}: {_reason(e)}") from e
    try:
        if is_dir:
            sys.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, None)
        else:
            sys.mount("/dev/null", path, None, sc.MS_BIND, None)
    except OSError as e:
        raise SetupError(f"mask {path}: {_reason(e)}") from e


def _make_readonly(path: str, sys: sc.Syscalls) -> None:
    try:
        # One call: does it exist, and which flags must the remount keep.
        flags = mounted_flags(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise SetupError(f"read-only {path}: {_reason(e)}") from e
    try:
        sys.mount(path, path, None, sc.MS_BIND | sc.MS_REC, None)
        sys.mount("", path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | flags, None)
    except OSError as e:
        raise SetupError(f"read-only {path}: {_reason(e)}") from e
