"""The container process's identity and privileges, set by its init just before exec.

``apply_rlimits`` and ``apply_identity_and_privileges`` are the last steps of set-up:
namespaces, mounts and the root are done, and the next call is ``execve``. Both go
through a ``SecurityOps`` object: ``LinuxSecurityOps`` makes the real calls,
``RecordingSecurityOps`` writes each call down so a unit test can check their order,
which is the whole point of this module (see ``apply_identity_and_privileges``).

``read_capabilities`` and ``parse_capabilities`` turn /proc/PID/status masks back
into names; ``lookup_user`` resolves ``user[:group]`` against a root filesystem;
``check_capability_names`` and ``check_rlimit`` are validation checks for the spec.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import prctl

from runtime.errors import ConfigError, SetupError
from runtime.rootfs import resolve_in_root
from runtime.spec.capabilities import CAPABILITIES, last_cap
from runtime.spec.model import Capabilities, Process, Rlimit, User
from runtime.syscalls import Recorder, libc

RLIMITS: dict[str, int] = {
    "RLIMIT_AS": resource.RLIMIT_AS,
    "RLIMIT_CORE": resource.RLIMIT_CORE,
    "RLIMIT_CPU": resource.RLIMIT_CPU,
    "RLIMIT_DATA": resource.RLIMIT_DATA,
    "RLIMIT_FSIZE": resource.RLIMIT_FSIZE,
    "RLIMIT_LOCKS": 10,  # in the kernel's table, though Python's resource lacks it
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE,
    "RLIMIT_NICE": resource.RLIMIT_NICE,
    "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,
    "RLIMIT_NPROC": resource.RLIMIT_NPROC,
    "RLIMIT_RSS": resource.RLIMIT_RSS,
    "RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO,
    "RLIMIT_RTTIME": resource.RLIMIT_RTTIME,
    "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
    "RLIMIT_STACK": resource.RLIMIT_STACK,
}

# OCI writes limits as uint64 with all ones meaning "unlimited"; Python spells it -1.
RLIM64_INFINITY = 2**64 - 1

CAPABILITY_NAMES: dict[int, str] = {number: name for name, number in CAPABILITIES.items()}

# /proc/PID/status line prefix -> the Capabilities field it shows.
_STATUS_FIELDS: dict[str, str] = {
    "CapInh": "inheritable",
    "CapPrm": "permitted",
    "CapEff": "effective",
    "CapBnd": "bounding",
    "CapAmb": "ambient",
}

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


# ---------------------------------------------------------------- the seam


class SecurityOps(Protocol):
    """The kernel calls this module makes; failures raise OSError."""

    def last_cap(self) -> int: ...
    def setrlimit(self, kind: int, soft: int, hard: int) -> None: ...
    def capbset_drop(self, cap: int) -> None: ...
    def set_keepcaps(self, keep: bool) -> None: ...
    def setgroups(self, gids: Sequence[int]) -> None: ...
    def setgid(self, gid: int) -> None: ...
    def setuid(self, uid: int) -> None: ...
    def umask(self, mask: int) -> None: ...
    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def ambient_clear_all(self) -> None: ...
    def ambient_raise(self, cap: int) -> None: ...
    def set_no_new_privs(self) -> None: ...


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _Rlimit64(ctypes.Structure):
    _fields_ = [("soft", ctypes.c_uint64), ("hard", ctypes.c_uint64)]


class LinuxSecurityOps:
    """Real calls: python-prctl where it has them, libc through ctypes where it does not."""

    def __init__(self) -> None:
        self._libc = libc("prctl", "prlimit64", "capset")
        # The kernel's highest capability cannot change while it runs: read it once.
        self._last_cap = last_cap()

    def _check(self, result: int) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _prctl(self, option: int, arg2: int, arg3: int = 0) -> None:
        self._check(
            self._libc.prctl(
                ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                ctypes.c_ulong(0), ctypes.c_ulong(0),
            )
        )

    def last_cap(self) -> int:
        return self._last_cap

    def setrlimit(self, kind: int, soft: int, hard: int) -> None:
        # prlimit(2) through libc rather than resource.setrlimit: it takes OCI's uint64
        # values as they are (Python's cannot pass 2**64-1) and fails with an errno
        # (Python's turns EPERM into a ValueError).
        limit = _Rlimit64(_rlim64(soft), _rlim64(hard))
        self._check(self._libc.prlimit64(0, kind, ctypes.byref(limit), None))

    def capbset_drop(self, cap: int) -> None:
        try:
            prctl.capbset_drop(cap)
        except ValueError:
            # python-prctl refuses numbers newer than the headers it was built with;
            # the kernel knows them, and a bounding set must never keep one by accident.
            self._prctl(PR_CAPBSET_DROP, cap)

    def set_keepcaps(self, keep: bool) -> None:
        prctl.set_keepcaps(keep)

    def setgroups(self, gids: Sequence[int]) -> None:
        os.setgroups(list(gids))

    def setgid(self, gid: int) -> None:
        os.setgid(gid)

    def setuid(self, uid: int) -> None:
        os.setuid(uid)

    def umask(self, mask: int) -> None:
        os.umask(mask)

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        # One capset(2) sets all three sets at once and exactly. python-prctl's
        # per-set objects would need a capget+capset per set, in an order that keeps
        # effective within permitted at every step.
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        self._check(self._libc.capset(ctypes.byref(header), data))

    def ambient_clear_all(self) -> None:
        self._prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

    def ambient_raise(self, cap: int) -> None:
        self._prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)

    def set_no_new_privs(self) -> None:
        prctl.set_no_new_privs(1)


class RecordingSecurityOps(Recorder):
    """A fake for unit tests: records each call and succeeds (see ``Recorder``)."""

    name_in_error = False

    def __init__(self, kernel_last_cap: int = max(CAPABILITIES.values()),
                 fail_on: dict[str, int] | None = None) -> None:
        super().__init__(fail_on)
        self.kernel_last_cap = kernel_last_cap

    def last_cap(self) -> int:
        return self.kernel_last_cap

    def setrlimit(self, kind: int, soft: int, hard: int) -> None:
        self._record("setrlimit", kind, soft, hard)

    def capbset_drop(self, cap: int) -> None:
        self._record("capbset_drop", cap)

    def set_keepcaps(self, keep: bool) -> None:
        self._record("set_keepcaps", keep)

    def setgroups(self, gids: Sequence[int]) -> None:
        self._record("setgroups", tuple(gids))

    def setgid(self, gid: int) -> None:
        self._record("setgid", gid)

    def setuid(self, uid: int) -> None:
        self._record("setuid", uid)

    def umask(self, mask: int) -> None:
        self._record("umask", mask)

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._record("capset", effective, permitted, inheritable)

    def ambient_clear_all(self) -> None:
        self._record("ambient_clear_all")

    def ambient_raise(self, cap: int) -> None:
        self._record("ambient_raise", cap)

    def set_no_new_privs(self) -> None:
        self._record("set_no_new_privs")


_linux_ops: LinuxSecurityOps | None = None


def linux_ops() -> LinuxSecurityOps:
    """The real calls, made once per process (a fork inherits them: see create)."""
    global _linux_ops
    if _linux_ops is None:
        _linux_ops = LinuxSecurityOps()
    return _linux_ops


def _failed(what: str, err: OSError, hint: str = "") -> SetupError:
    reason = err.strerror or os.strerror(err.errno or 0)
    return SetupError(f"{what}: {reason}{hint}")


# ---------------------------------------------------------------- rlimits


def _rlim64(value: int) -> int:
    # Python's RLIM_INFINITY is -1; the kernel's is all ones.
    return RLIM64_INFINITY if value == resource.RLIM_INFINITY else value


def apply_rlimits(rlimits: Sequence[Rlimit], ops: SecurityOps | None = None) -> None:
    """Set each limit. Call before ``apply_identity_and_privileges``: raising a hard
    limit needs CAP_SYS_RESOURCE, which the container usually no longer has after."""
    ops = ops or linux_ops()
    for r in rlimits:
        kind = RLIMITS.get(r.type)
        if kind is None:
            raise SetupError(f"setrlimit {r.type}: unknown resource")
        try:
            ops.setrlimit(kind, r.soft, r.hard)
        except OSError as err:
            raise _failed(f"setrlimit {r.type} {r.soft}:{r.hard}", err) from None


# ---------------------------------------------------------------- capabilities


def capability_mask(names: Iterable[str], highest: int) -> int:
    """The bit mask of ``names``, leaving out capabilities above ``highest`` (what the
    running kernel knows): a spec written for a newer kernel still starts."""
    mask = 0
    for name in names:
        number = CAPABILITIES.get(name)
        if number is None:
            raise SetupError(f"capability {name}: unknown")
        if number <= highest:
            mask |= 1 << number
    return mask


def capability_names(mask: int) -> frozenset[str]:
    """Names of the bits set in ``mask``; a bit without a name reads ``CAP_UNKNOWN_<n>``."""
    names = set()
    bit = 0
    while mask:
        if mask & 1:
            names.add(CAPABILITY_NAMES.get(bit, f"CAP_UNKNOWN_{bit}"))
        mask >>= 1
        bit += 1
    return frozenset(names)


def _numbers(mask: int) -> list[int]:
    return [bit for bit in range(mask.bit_length()) if mask >> bit & 1]


def apply_identity_and_privileges(process: Process, ops: SecurityOps | None = None) -> None:
    """Become ``process.user`` holding exactly ``process.capabilities``.

    The order is forced by what each step needs and what it takes away:

    1. Bounding set first: dropping from it needs CAP_SETPCAP in the effective set,
       which the uid change (step 3) and capset (step 4) may both take away. It also
       limits what any later exec can gain, so nothing runs before it is narrowed.
    2. PR_SET_KEEPCAPS: changing from uid 0 to another uid clears the permitted set
       unless this is set; without it step 4 would have nothing left to keep.
    3. Groups, then gid, then uid: setgroups and setgid need CAP_SETGID, which is
       gone once the uid is no longer 0 (the uid change clears the effective set), so
       the uid comes last. The umask goes here as part of "who we are".
    4. capset: now that the uid is final, set effective, permitted and inheritable
       exactly (one call). Before the uid change it could drop the CAP_SETUID and
       CAP_SETGID step 3 needs, and the uid change would clear the effective set.
    5. Ambient: the kernel only lets a capability be ambient if it is already both
       permitted and inheritable, so this follows capset. Clearing first drops any
       ambient capability inherited from whoever started us.
    6. No-new-privileges last: it restricts only later execs (setuid binaries and
       file capabilities) and must be set before a seccomp filter is loaded.

    ``process.capabilities`` of None leaves capabilities alone (steps 1, 2, 4, 5 are
    skipped); the kernel's usual rules then apply to the uid change.
    """
    ops = ops or linux_ops()
    caps = process.capabilities
    highest = ops.last_cap()
    # Every name is checked before the first change, so a bad spec changes nothing.
    masks = _masks(caps, highest) if caps is not None else None

    if caps is not None:
        keep = capability_mask(caps.bounding, highest)
        for cap in range(highest + 1):
            if not keep >> cap & 1:
                try:
                    ops.capbset_drop(cap)
                except OSError as err:
                    name = CAPABILITY_NAMES.get(cap, str(cap))
                    raise _failed(f"drop {name} from the bounding set", err) from None
        try:
            ops.set_keepcaps(True)
        except OSError as err:
            raise _failed("prctl PR_SET_KEEPCAPS", err) from None

    _set_identity(process.user, ops)

    if masks is not None:
        _set_capabilities(*masks, ops=ops)

    if process.no_new_privileges:
        try:
            ops.set_no_new_privs()
        except OSError as err:
            raise _failed("prctl PR_SET_NO_NEW_PRIVS", err) from None


def _set_capabilities(
    effective: int, permitted: int, inheritable: int, ambient: int, *, ops: SecurityOps
) -> None:
    try:
        ops.capset(effective, permitted, inheritable)
    except OSError as err:
        raise _failed("capset", err) from None
    try:
        ops.ambient_clear_all()
    except OSError as err:
        # Kernels before 4.3 have no ambient set: nothing to clear, nothing to raise.
        if ambient:
            raise _failed("prctl PR_CAP_AMBIENT_CLEAR_ALL", err) from None
    for cap in _numbers(ambient):
        try:
            ops.ambient_raise(cap)
        except OSError as err:
            raise _failed(
                f"raise ambient capability {CAPABILITY_NAMES[cap]}", err,
                " (an ambient capability must also be permitted and inheritable)",
            ) from None


def _masks(caps: Capabilities, highest: int) -> tuple[int, int, int, int]:
    effective = capability_mask(caps.effective, highest)
    permitted = capability_mask(caps.permitted, highest)
    inheritable = capability_mask(caps.inheritable, highest)
    ambient = capability_mask(caps.ambient, highest)
    # The kernel answers a bare EPERM for this; say which capabilities are the cause.
    stray = effective & ~permitted
    if stray:
        names = ", ".join(sorted(capability_names(stray)))
        raise SetupError(f"capset: effective {names} not in the permitted set")
    return effective, permitted, inheritable, ambient


def _set_identity(user: User, ops: SecurityOps) -> None:
    gids = list(user.additional_gids)
    try:
        ops.setgroups(gids)
    except OSError as err:
        # In a user namespace whose setgroups is "deny", an empty list is already true.
        if gids or not _setgroups_denied():
            groups = ",".join(map(str, gids)) or "(none)"
            raise _failed(f"setgroups {groups}", err) from None
    try:
        ops.setgid(user.gid)
    except OSError as err:
        raise _failed(f"setgid {user.gid}", err) from None
    try:
        ops.setuid(user.uid)
    except OSError as err:
        raise _failed(f"setuid {user.uid}", err) from None
    if user.umask is not None:
        ops.umask(user.umask)


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def parse_capabilities(status: str) -> dict[str, frozenset[str]]:
    """Capability names per set from the text of /proc/PID/status, keyed like the
    fields of ``Capabilities`` (bounding, effective, inheritable, permitted, ambient)."""
    sets: dict[str, frozenset[str]] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        name = _STATUS_FIELDS.get(key)
        if name is not None:
            sets[name] = capability_names(int(value.strip(), 16))
    return sets


def read_capabilities(pid: int | str = "self") -> dict[str, frozenset[str]]:
    """The capability sets of process ``pid`` (see ``parse_capabilities``)."""
    with open(f"/proc/{pid}/status") as f:
        return parse_capabilities(f.read())


# ---------------------------------------------------------------- spec checks


def check_capability_names(names: Iterable[str], field: str) -> None:
    for name in names:
        if name not in CAPABILITIES:
            raise ConfigError(field, f"unknown capability {name}")


def check_rlimit(r: Rlimit, field: str) -> None:
    if r.type not in RLIMITS:
        raise ConfigError(field, f"unknown rlimit type {r.type}")
    soft, hard = _rlim64(r.soft), _rlim64(r.hard)
    for what, value in (("soft", soft), ("hard", hard)):
        if not 0 <= value <= RLIM64_INFINITY:
            raise ConfigError(field, f"{r.type} {what} limit {value} is out of range")
    if soft > hard:
        raise ConfigError(field, f"{r.type} soft limit {soft} is above the hard limit {hard}")


# ---------------------------------------------------------------- users


_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel, so it is no one's id


def lookup_user(rootfs: Path, spec: str) -> User:
    """Resolve ``user``, ``uid``, ``user:group`` or ``uid:gid`` in the container's files.

    As Docker and runc do: a name must be in etc/passwd (etc/group for a group); a
    number need not be. Without an explicit group, the gid is the passwd entry's (0
    for an unlisted uid) and the additional gids are the groups that list the user
    as a member.
    """
    user_part, has_group, group_part = spec.partition(":")
    if not user_part or (has_group and not group_part):
        raise SetupError(f"user {spec!r}: expected user, uid, user:group or uid:gid")

    entry = _find_passwd(rootfs, user_part)
    if entry is not None:
        name, uid, gid = entry[0], int(entry[2]), int(entry[3])
    elif user_part.isdigit():
        name, uid, gid = "", _parse_id(user_part, spec), 0
    else:
        raise SetupError(f"user {user_part}: not found in {rootfs}/etc/passwd")

    additional: tuple[int, ...] = ()
    if has_group:
        gid = _lookup_group(rootfs, group_part, spec)
    elif name:
        groups = _entries(rootfs, "etc/group", 4, numeric=(2,))
        additional = tuple(int(g[2]) for g in groups if name in g[3].split(","))
    return User(uid=uid, gid=gid, additional_gids=additional)


def _parse_id(text: str, spec: str) -> int:
    value = int(text)
    if value > _MAX_ID:
        raise SetupError(f"user {spec!r}: id {value} is out of range")
    return value


def _find_passwd(rootfs: Path, user: str) -> list[str] | None:
    by_number = user.isdigit()
    for entry in _entries(rootfs, "etc/passwd", 7, numeric=(2, 3)):
        if (entry[2] if by_number else entry[0]) == user:
            return entry
    return None


def _lookup_group(rootfs: Path, group: str, spec: str) -> int:
    if group.isdigit():
        return _parse_id(group, spec)
    for entry in _entries(rootfs, "etc/group", 4, numeric=(2,)):
        if entry[0] == group:
            return int(entry[2])
    raise SetupError(f"group {group}: not found in {rootfs}/etc/group")


def _entries(
    rootfs: Path, relpath: str, width: int, numeric: tuple[int, ...]
) -> list[list[str]]:
    """The well-formed lines of a passwd-style file: at least ``width`` fields, the
    ``numeric`` ones numbers. A missing file has none."""
    try:
        # An image's etc/passwd may be a link: followed as if rootfs were /, never out.
        text = Path(resolve_in_root(str(rootfs), relpath)).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SetupError(f"{rootfs}/{relpath}: too many levels of symbolic links") from None
        raise _failed(f"read {rootfs}/{relpath}", err) from None
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if line.startswith("#") or len(fields) < width:
            continue
        if all(fields[i].isdigit() for i in numeric):
            entries.append(fields)
    return entries
