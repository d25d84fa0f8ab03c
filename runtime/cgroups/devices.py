"""Device access rules: the list a container gets, and what the list means.

``effective_rules`` builds the list once, for both drivers:

1. the config's ``linux.resources.devices``, in order;
2. the standard devices every container may use (runc's list: mknod of any node,
   null, zero, full, random, urandom, tty, ptmx, the devpts ptys, tun) — after the
   config's rules, as runc puts them, so the deny-all that ``runc spec`` and every
   engine write first cannot take /dev/null away;
3. read, write and mknod of each ``linux.devices`` node, which the spec says MUST
   be available in the container. runc and crun leave that to the engine (which
   adds a rule per device); podium does it itself.

What a list means is what the v1 ``devices`` controller makes of it, written line
by line, starting from "deny all" (``state`` computes the outcome, ``allows`` checks
a request against it):

- a type ``a`` rule resets: allow all (or deny all) and forget every exception;
- a rule against the current default (an allow while denying by default) adds its
  access to the exception with exactly its type and numbers;
- a rule along the default removes its access from that exact exception only — a
  deny of ``c 1:* w`` does not narrow an earlier allow of ``c 1:3 rwm``;
- a request (one or more of r, w, m) is granted, when denying by default, if a
  single exception covering its device holds every access it asks for; when
  allowing by default, unless some exception covering its device holds any of them.

On v1 the kernel does this itself; on v2 the BPF program (``v2/devices.py``) checks
the computed state, so a list means the same on both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from runtime.errors import CgroupError
from runtime.spec.model import Device, DeviceRule

ANY = None  # a wildcard major or minor ("*")

DEFAULT_RULES: tuple[DeviceRule, ...] = (
    DeviceRule(allow=True, type="c", major=ANY, minor=ANY, access="m"),
    DeviceRule(allow=True, type="b", major=ANY, minor=ANY, access="m"),
    DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),  # null
    DeviceRule(allow=True, type="c", major=1, minor=5, access="rwm"),  # zero
    DeviceRule(allow=True, type="c", major=1, minor=7, access="rwm"),  # full
    DeviceRule(allow=True, type="c", major=1, minor=8, access="rwm"),  # random
    DeviceRule(allow=True, type="c", major=1, minor=9, access="rwm"),  # urandom
    DeviceRule(allow=True, type="c", major=5, minor=0, access="rwm"),  # tty
    DeviceRule(allow=True, type="c", major=5, minor=2, access="rwm"),  # ptmx
    DeviceRule(allow=True, type="c", major=136, minor=ANY, access="rwm"),  # /dev/pts/*
    DeviceRule(allow=True, type="c", major=10, minor=200, access="rwm"),  # net/tun
)

ACCESS = "rwm"
MAX_NUMBER = 0xFFFFFFFF  # device numbers are u32 to the kernel


class DeviceKey(NamedTuple):
    type: str  # "c" or "b"
    major: int | None  # None: any
    minor: int | None


class DeviceState(NamedTuple):
    """Where a rule list ends: a default and the exceptions to it."""

    default_allow: bool
    exceptions: tuple[tuple[DeviceKey, str], ...] = ()  # (device, access), in order made


def effective_rules(config_rules: Iterable[DeviceRule],
                    config_devices: Iterable[Device]) -> tuple[DeviceRule, ...]:
    """The rules a container's cgroup gets: the config's, the defaults, its devices."""
    nodes = tuple(
        DeviceRule(allow=True, type="c" if d.type == "u" else d.type,
                   major=d.major, minor=d.minor, access="rwm")
        for d in config_devices
        if d.type != "p"  # a FIFO is no device: the cgroup never asks about it
    )
    return (*config_rules, *DEFAULT_RULES, *nodes)


def number(value: int | None) -> int | None:
    """A rule's major or minor: None (or a negative number, runc's -1) is any."""
    return None if value is None or value < 0 else value


def check(rule: DeviceRule) -> None:
    """Refuse a rule the kernel would refuse, before anything is written."""
    if rule.type not in ("a", "b", "c"):
        raise CgroupError("devices", f"device rule type {rule.type!r} is not a, b or c")
    if not rule.access or set(rule.access) - set(ACCESS):
        raise CgroupError("devices",
                          f"device rule access {rule.access!r} is not made of r, w, m")
    for name, value in (("major", rule.major), ("minor", rule.minor)):
        if value is not None and value > MAX_NUMBER:
            raise CgroupError("devices", f"device rule {name} {value} is above {MAX_NUMBER}")


def last_reset(rules: tuple[DeviceRule, ...]) -> int:
    """The index of the last type ``a`` rule (-1 if none): nothing before it counts."""
    for i in range(len(rules) - 1, -1, -1):
        if rules[i].type == "a":
            return i
    return -1


def _merge(access: str, more: str) -> str:
    return "".join(a for a in ACCESS if a in access or a in more)


def state(rules: tuple[DeviceRule, ...]) -> DeviceState:
    """The default and exceptions the v1 controller ends with after ``rules``."""
    for rule in rules:
        check(rule)
    reset = last_reset(rules)
    default_allow = reset >= 0 and rules[reset].allow
    exceptions: dict[DeviceKey, str] = {}
    for rule in rules[reset + 1:]:
        key = DeviceKey(rule.type, number(rule.major), number(rule.minor))
        if rule.allow != default_allow:
            exceptions[key] = _merge(exceptions.get(key, ""), rule.access)
        elif key in exceptions:
            left = "".join(a for a in exceptions[key] if a not in rule.access)
            if left:
                exceptions[key] = left
            else:
                del exceptions[key]
    return DeviceState(default_allow, tuple(exceptions.items()))


def covers(key: DeviceKey, type_: str, major: int, minor: int) -> bool:
    return (key.type == type_ and key.major in (None, major)
            and key.minor in (None, minor))


def allows(s: DeviceState, type_: str, major: int, minor: int, access: str) -> bool:
    """Whether a process may have ``access`` (some of r, w, m) to a device."""
    matching = [a for key, a in s.exceptions if covers(key, type_, major, minor)]
    if s.default_allow:
        return not any(set(access) & set(a) for a in matching)
    return any(set(access) <= set(a) for a in matching)
