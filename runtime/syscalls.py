"""The one seam between the runtime and the kernel calls Python 3.11 lacks.

Everything that changes a process's namespaces, mounts or root goes through a
``Syscalls`` object: ``LinuxSyscalls`` calls libc through ctypes; ``RecordingSyscalls``
only writes each call down, so unit tests can assert the exact steps of container
set-up without root. Integration tests then prove the same steps on the real kernel.

Calls Python already wraps (``os.mknod``, ``os.setgid``...) are used directly where
no test needs to watch them.
"""

from __future__ import annotations

import ctypes
import os
from typing import Protocol

# clone(2)/unshare(2) namespace flags.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# OCI namespace type -> clone flag.
NAMESPACE_FLAGS: dict[str, int] = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}

# OCI namespace type -> the file under /proc/PID/ns/.
NAMESPACE_FILES: dict[str, str] = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

# umount2(2) flags.
MNT_FORCE = 0x1
MNT_DETACH = 0x2

# prctl(2) options used outside python-prctl's coverage.
PR_SET_CHILD_SUBREAPER = 36

SYS_pivot_root = 155  # x86_64
SYS_setns = 308  # x86_64; libc's setns() is used when present


class Syscalls(Protocol):
    """The kernel calls container set-up makes; see the module docstring."""

    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int) -> None: ...
    def mount(
        self, source: str, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None: ...
    def umount2(self, target: str, flags: int) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def setdomainname(self, name: str) -> None: ...
    def mknod(self, path: str, mode: int, device: int) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...


def libc(*functions: str) -> ctypes.CDLL:
    """The C library this process already has loaded (find_library would run
    ldconfig), with ``functions`` looked up now: ctypes caches each on first use, and
    a container's init that looked them up itself, after the fork, would pay a
    ``dlsym`` for each (~20 us) on every container start."""
    lib = ctypes.CDLL(None, use_errno=True)
    for name in functions:
        getattr(lib, name)
    return lib


class LinuxSyscalls:
    """Real calls into libc. Failures raise OSError with errno and the path involved."""

    def __init__(self) -> None:
        self._libc = libc("unshare", "setns", "mount", "umount2", "syscall", "sethostname",
                          "setdomainname")

    def _check(self, result: int, what: str, path: str | None = None) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}", path)

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(ctypes.c_int(flags)), "unshare")

    def setns(self, fd: int, nstype: int) -> None:
        self._check(self._libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")

    def mount(
        self, source: str, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        result = self._libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        self._check(result, f"mount {source} on {target}", target)

    def umount2(self, target: str, flags: int) -> None:
        self._check(self._libc.umount2(target.encode(), ctypes.c_int(flags)), "umount", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        result = self._libc.syscall(
            ctypes.c_long(SYS_pivot_root), new_root.encode(), put_old.encode()
        )
        self._check(result, "pivot_root", new_root)

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.setdomainname(raw, ctypes.c_size_t(len(raw))), "setdomainname")

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)


class Recorder:
    """The base of the recording fakes: every call becomes a tuple in ``calls``.

    ``fail_on`` maps a call name to the errno that call should fail with; the error
    reads like the real one's (the seam's calls name themselves, plain OS calls do not).
    """

    name_in_error = True

    def __init__(self, fail_on: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail_on: dict[str, int] = fail_on or {}

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        if name in self.fail_on:
            err = self.fail_on[name]
            text = os.strerror(err)
            raise OSError(err, f"{name}: {text}" if self.name_in_error else text)

    def names(self) -> list[str]:
        return [str(call[0]) for call in self.calls]


class RecordingSyscalls(Recorder):
    """A fake for unit tests: records every kernel call and succeeds (see ``Recorder``)."""

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)

    def mount(
        self, source: str, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._record("setdomainname", name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._record("mknod", path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._record("chown", path, uid, gid)
