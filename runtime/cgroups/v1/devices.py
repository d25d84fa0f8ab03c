"""v1 devices: reset to the list's last "all" rule (deny all if it has none), then
write the rules after it in order; the kernel keeps the exceptions
(``runtime/cgroups/devices.py`` says what the list means)."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.common import write
from runtime.cgroups.devices import check, last_reset, number
from runtime.cgroups.fs import CgroupFs
from runtime.spec.model import DeviceRule


def rule_line(rule: DeviceRule) -> str:
    """The line devices.allow/deny take: "c 1:3 rwm", "*" for any number; "a" for all."""
    check(rule)
    if rule.type == "a":
        return "a"  # the kernel reads nothing after it
    major, minor = number(rule.major), number(rule.minor)
    return f"{rule.type} {'*' if major is None else major}:{'*' if minor is None else minor} " \
           f"{rule.access}"


def file_for(rule: DeviceRule) -> str:
    return "devices.allow" if rule.allow else "devices.deny"


def apply(fs: CgroupFs, d: Path, rules: tuple[DeviceRule, ...]) -> None:
    lines = [(file_for(rule), rule_line(rule)) for rule in rules]  # check all before writing
    # Start from the last reset, so nothing the cgroup inherited (allow all, in a new
    # cgroup) survives and the rules before it are not written for nothing.
    reset = last_reset(rules)
    if reset < 0:
        write(fs, d / "devices.deny", "a")
    for name, line in lines[max(reset, 0):]:
        write(fs, d / name, line)
