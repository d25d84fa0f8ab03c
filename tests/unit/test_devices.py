"""Device rules: the list a container gets, what it means, and v1's writes (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cgroups import CgroupV1Driver
from runtime.cgroups.devices import (
    DEFAULT_RULES,
    DeviceKey,
    DeviceState,
    allows,
    effective_rules,
    state,
)
from runtime.errors import CgroupError
from runtime.spec.model import Device, DeviceRule, Resources
from tests.unit.test_cgroups_v1 import SEPARATE, FakeV1Kernel, written

DENY_ALL = DeviceRule(allow=False)  # what `runc spec` and engines write first
ALLOW_ALL = DeviceRule(allow=True)


def rule(allow: bool, spec: str) -> DeviceRule:
    """``"c 1:3 rw"`` as a rule."""
    type_, numbers, access = spec.split()
    major, minor = (None if n == "*" else int(n) for n in numbers.split(":"))
    return DeviceRule(allow=allow, type=type_, major=major, minor=minor, access=access)


# --- the list ---


def test_effective_rules_are_the_configs_then_the_defaults_then_its_devices() -> None:
    fuse = Device(path="/dev/fuse", type="c", major=10, minor=229)
    sda = Device(path="/dev/sda", type="b", major=8, minor=0, file_mode=0o600)
    unbuffered = Device(path="/dev/u", type="u", major=4, minor=64)
    fifo = Device(path="/dev/fifo", type="p", major=0, minor=0)
    mine = rule(False, "c 1:9 w")
    rules = effective_rules((DENY_ALL, mine), (fuse, sda, unbuffered, fifo))
    assert rules == (
        DENY_ALL, mine, *DEFAULT_RULES,
        rule(True, "c 10:229 rwm"), rule(True, "b 8:0 rwm"), rule(True, "c 4:64 rwm"),
    )


def test_runc_defaults() -> None:
    s = state(effective_rules((), ()))
    assert s == DeviceState(default_allow=False, exceptions=(
        (DeviceKey("c", None, None), "m"),
        (DeviceKey("b", None, None), "m"),
        *((DeviceKey("c", 1, n), "rwm") for n in (3, 5, 7, 8, 9)),
        (DeviceKey("c", 5, 0), "rwm"),
        (DeviceKey("c", 5, 2), "rwm"),
        (DeviceKey("c", 136, None), "rwm"),
        (DeviceKey("c", 10, 200), "rwm"),
    ))


@pytest.mark.parametrize("config", [(), (DENY_ALL,)])
def test_default_container_devices(config: tuple[DeviceRule, ...]) -> None:
    s = state(effective_rules(config, ()))
    assert allows(s, "c", 1, 3, "rw")  # /dev/null
    assert allows(s, "c", 136, 7, "rw")  # a pty
    assert allows(s, "b", 8, 0, "m")  # mknod of anything
    assert not allows(s, "b", 8, 0, "r")  # but not opening it
    assert not allows(s, "c", 10, 229, "r")  # /dev/fuse, not listed
    assert not allows(s, "c", 4, 1, "rw")  # a host tty


def test_the_configs_deny_all_cannot_take_the_defaults_away() -> None:
    s = state(effective_rules((DENY_ALL, rule(False, "c 1:3 rwm")), ()))
    assert allows(s, "c", 1, 3, "rwm")


def test_allow_all_stays_allow_all() -> None:
    s = state(effective_rules((ALLOW_ALL,), ()))
    assert s == DeviceState(default_allow=True)
    assert allows(s, "b", 8, 0, "rw")


def test_a_listed_device_is_usable() -> None:
    fuse = Device(path="/dev/fuse", type="c", major=10, minor=229)
    assert allows(state(effective_rules((DENY_ALL,), (fuse,))), "c", 10, 229, "rw")


# --- what a list means (the v1 controller's reading) ---


def test_nothing_is_allowed_without_rules() -> None:
    assert state(()) == DeviceState(default_allow=False)


def test_a_type_a_rule_forgets_everything_before_it() -> None:
    s = state((rule(True, "c 1:3 rwm"), DENY_ALL, rule(True, "c 1:5 r")))
    assert s.exceptions == ((DeviceKey("c", 1, 5), "r"),)
    s = state((rule(False, "c 1:3 rwm"), ALLOW_ALL))
    assert s == DeviceState(default_allow=True)


def test_an_allow_adds_to_the_exact_exception() -> None:
    s = state((DENY_ALL, rule(True, "c 1:3 r"), rule(True, "c 1:3 m")))
    assert s.exceptions == ((DeviceKey("c", 1, 3), "rm"),)


def test_a_deny_removes_access_from_the_exact_exception_only() -> None:
    s = state((DENY_ALL, rule(True, "c 1:3 rwm"), rule(False, "c 1:3 w")))
    assert s.exceptions == ((DeviceKey("c", 1, 3), "rm"),)
    # A broader deny does not narrow a narrower allow, as on v1.
    s = state((DENY_ALL, rule(True, "c 1:3 rwm"), rule(False, "c 1:* w")))
    assert allows(s, "c", 1, 3, "w")
    s = state((DENY_ALL, rule(True, "c 1:3 rw"), rule(False, "c 1:3 rw")))
    assert s.exceptions == ()


def test_one_exception_must_hold_every_access_asked_for() -> None:
    s = state((DENY_ALL, rule(True, "c 1:3 r"), rule(True, "c 1:* w")))
    assert allows(s, "c", 1, 3, "r") and allows(s, "c", 1, 3, "w")
    assert not allows(s, "c", 1, 3, "rw")


def test_allowing_by_default_any_denied_access_refuses() -> None:
    s = state((ALLOW_ALL, rule(False, "b 8:* w")))
    assert allows(s, "b", 8, 0, "r")
    assert not allows(s, "b", 8, 0, "rw")
    assert allows(s, "c", 8, 0, "w")  # another type
    s = state((ALLOW_ALL, rule(False, "b 8:* w"), rule(True, "b 8:* w")))
    assert s == DeviceState(default_allow=True)


@pytest.mark.parametrize("bad,message", [
    (DeviceRule(allow=True, type="p"), "type 'p' is not a, b or c"),
    (DeviceRule(allow=True, access="rx"), "access 'rx' is not made of r, w, m"),
    (DeviceRule(allow=True, access=""), "access '' is not made of r, w, m"),
    (DeviceRule(allow=True, type="c", major=1 << 32), "major 4294967296 is above"),
])
def test_bad_rules(bad: DeviceRule, message: str) -> None:
    with pytest.raises(CgroupError, match=message):
        state((DENY_ALL, bad))


# --- v1: the files written ---


@pytest.fixture
def kernel(tmp_path: Path) -> FakeV1Kernel:
    return FakeV1Kernel(tmp_path, SEPARATE)


def v1_apply(kernel: FakeV1Kernel, rules: tuple[DeviceRule, ...]) -> list[tuple[str, str]]:
    driver = CgroupV1Driver(kernel.root, fs=kernel, mountinfo=Path("/nonexistent"))
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.apply(Resources(devices=rules))
    return written(kernel, "devices")


def test_v1_runc_spec_bundle(kernel: FakeV1Kernel) -> None:
    assert v1_apply(kernel, effective_rules((DENY_ALL,), ())) == [
        ("podium/a/devices.deny", "a"),
        ("podium/a/devices.allow", "c *:* m"),
        ("podium/a/devices.allow", "b *:* m"),
        ("podium/a/devices.allow", "c 1:3 rwm"),
        ("podium/a/devices.allow", "c 1:5 rwm"),
        ("podium/a/devices.allow", "c 1:7 rwm"),
        ("podium/a/devices.allow", "c 1:8 rwm"),
        ("podium/a/devices.allow", "c 1:9 rwm"),
        ("podium/a/devices.allow", "c 5:0 rwm"),
        ("podium/a/devices.allow", "c 5:2 rwm"),
        ("podium/a/devices.allow", "c 136:* rwm"),
        ("podium/a/devices.allow", "c 10:200 rwm"),
    ]


def test_v1_without_a_reset_starts_from_deny_all(kernel: FakeV1Kernel) -> None:
    assert v1_apply(kernel, (rule(True, "c 1:3 rw"),)) == [
        ("podium/a/devices.deny", "a"),
        ("podium/a/devices.allow", "c 1:3 rw"),
    ]


def test_v1_starts_from_the_last_reset(kernel: FakeV1Kernel) -> None:
    rules = (DENY_ALL, rule(True, "c 1:3 rw"), ALLOW_ALL, rule(False, "b 8:0 rw"),
             DeviceRule(allow=False, type="c", major=-1, minor=-1, access="w"))
    assert v1_apply(kernel, rules) == [
        ("podium/a/devices.allow", "a"),
        ("podium/a/devices.deny", "b 8:0 rw"),
        ("podium/a/devices.deny", "c *:* w"),  # runc's -1 is any
    ]


def test_v1_bad_rule_anywhere_writes_nothing(kernel: FakeV1Kernel) -> None:
    with pytest.raises(CgroupError, match="type 'x'"):
        v1_apply(kernel, (DENY_ALL, DeviceRule(allow=True, type="x"), ALLOW_ALL))
    assert written(kernel, "devices") == []


def test_v1_rules_need_the_devices_controller(tmp_path: Path) -> None:
    kernel = FakeV1Kernel(tmp_path, {"pids": ("pids",)})
    with pytest.raises(CgroupError, match="the v1 devices controller, which is not mounted"):
        v1_apply(kernel, (DENY_ALL,))
