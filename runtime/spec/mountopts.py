"""Mount options as written in config.json (``"nosuid"``, ``"ro"``, ``"rbind"``) to mount(2) flags.

Options that are not flags (``mode=755``, ``size=64m``, ``lowerdir=...``) go to the
filesystem as its data string, in their order.
"""

from __future__ import annotations

from typing import NamedTuple

from runtime import syscalls as sc

# option -> (flag, set it?)
_FLAGS: dict[str, tuple[int, bool]] = {
    "defaults": (0, False),
    "ro": (sc.MS_RDONLY, True),
    "rw": (sc.MS_RDONLY, False),
    "suid": (sc.MS_NOSUID, False),
    "nosuid": (sc.MS_NOSUID, True),
    "dev": (sc.MS_NODEV, False),
    "nodev": (sc.MS_NODEV, True),
    "exec": (sc.MS_NOEXEC, False),
    "noexec": (sc.MS_NOEXEC, True),
    "sync": (sc.MS_SYNCHRONOUS, True),
    "async": (sc.MS_SYNCHRONOUS, False),
    "dirsync": (sc.MS_DIRSYNC, True),
    "remount": (sc.MS_REMOUNT, True),
    "mand": (sc.MS_MANDLOCK, True),
    "nomand": (sc.MS_MANDLOCK, False),
    "atime": (sc.MS_NOATIME, False),
    "noatime": (sc.MS_NOATIME, True),
    "diratime": (sc.MS_NODIRATIME, False),
    "nodiratime": (sc.MS_NODIRATIME, True),
    "relatime": (sc.MS_RELATIME, True),
    "norelatime": (sc.MS_RELATIME, False),
    "strictatime": (sc.MS_STRICTATIME, True),
    "nostrictatime": (sc.MS_STRICTATIME, False),
    "lazytime": (sc.MS_LAZYTIME, True),
    "nolazytime": (sc.MS_LAZYTIME, False),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, True),
    "symfollow": (sc.MS_NOSYMFOLLOW, False),
    "bind": (sc.MS_BIND, True),
    "rbind": (sc.MS_BIND | sc.MS_REC, True),
}

_PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Filesystem data options podium knows are harmless to pass through; anything
# else with "=" passes too (the filesystem judges it), a bare unknown word is an error.
_BARE_DATA_OPTIONS = frozenset({"newinstance", "nouuid", "userxattr", "redirect_dir=on"})

PROPAGATION_NAMES = frozenset(_PROPAGATION)
OPTION_NAMES = frozenset(_FLAGS) | PROPAGATION_NAMES


class MountFlags(NamedTuple):
    flags: int  # mount(2) flags for the mount itself
    propagation: int  # a separate mount(2) call changes propagation
    data: str  # filesystem options, comma-joined

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_mount_options(options: tuple[str, ...] | list[str]) -> MountFlags:
    """Split config.json mount options into flags, propagation and data.

    Raises ValueError naming the first option that is neither a flag, a
    propagation mode nor a ``key=value`` filesystem option.
    """
    flags = 0
    propagation = 0
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            bit, on = _FLAGS[option]
            flags = flags | bit if on else flags & ~bit
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        elif "=" in option or option in _BARE_DATA_OPTIONS:
            data.append(option)
        else:
            raise ValueError(f"unknown mount option {option!r}")
    return MountFlags(flags=flags, propagation=propagation, data=",".join(data))
