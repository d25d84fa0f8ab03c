"""v1 devices: deny everything, then apply the rules in order (as runc does)."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.common import write
from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError
from runtime.spec.model import DeviceRule


def rule_line(rule: DeviceRule) -> str:
    """The line devices.allow/deny take: "c 1:3 rwm", "*" for any number."""
    if rule.type not in ("a", "b", "c"):
        raise CgroupError("devices", f"device rule type {rule.type!r} is not a, b or c")
    if not rule.access or set(rule.access) - set("rwm"):
        raise CgroupError("devices", f"device rule access {rule.access!r} is not made of r, w, m")
    major = "*" if rule.major is None or rule.major < 0 else str(rule.major)
    minor = "*" if rule.minor is None or rule.minor < 0 else str(rule.minor)
    return f"{rule.type} {major}:{minor} {rule.access}"


def apply(fs: CgroupFs, d: Path, rules: tuple[DeviceRule, ...]) -> None:
    lines = [(rule.allow, rule_line(rule)) for rule in rules]  # check all before writing
    # Start from nothing allowed, so only what the rules grant is reachable,
    # whatever the cgroup inherited.
    write(fs, d / "devices.deny", "a")
    for allow, line in lines:
        write(fs, d / ("devices.allow" if allow else "devices.deny"), line)
