"""The device cgroup on the real kernel: v1's devices files and v2's BPF program refuse
what the rules do not allow, for a bare process and for a container."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Runtime
from runtime.cgroups import CgroupDriver, CgroupV1Driver, CgroupV2Driver
from runtime.cgroups.devices import effective_rules, state
from runtime.cgroups.v1 import CgroupV1
from runtime.cgroups.v2 import CgroupV2
from runtime.spec.model import DeviceRule, Resources
from tests.conftest import need, need_root
from tests.integration.test_cgroups import ROOT, end, v1_hierarchies, v2_root
from tests.integration.test_runtime import config, run

DENY_ALL = DeviceRule(allow=False)
NULL_ONLY = (DENY_ALL, DeviceRule(allow=True, type="c", major=1, minor=3, access="rw"))

# Waits for a line, then tries each "open PATH" / "mknod PATH b MAJOR MINOR" in argv
# and prints one result per line, so the test can move it into the cgroup first.
PROBE = """
import os, stat, sys
sys.stdin.readline()
for step in sys.argv[1:]:
    op, path, *rest = step.split()
    try:
        if op == "open":
            os.close(os.open(path, os.O_RDONLY))
        else:
            os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(int(rest[1]), int(rest[2])))
        print("ok", flush=True)
    except OSError as e:
        print(e.strerror, flush=True)
"""


@pytest.fixture
def v2(cgroup_parent: str) -> Iterator[CgroupV2]:
    need_root()
    root = v2_root()
    need(root is not None, "no cgroup v2 hierarchy is mounted")
    assert root is not None
    cg = CgroupV2Driver(root).cgroup(f"{cgroup_parent}/dev-{uuid.uuid4().hex[:8]}")
    cg.create()
    try:
        yield cg
    finally:
        cg.remove()
        try:
            (root / cgroup_parent).rmdir()  # on a pure v2 host no shared clean-up looks here
        except OSError:
            pass


def probe(cg: CgroupV2, *steps: str) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", PROBE, *steps],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        cg.add(proc.pid)
        out, _ = proc.communicate("go\n", timeout=30)
    finally:
        end(proc)
    assert proc.returncode == 0
    return out.split("\n")[:-1]


# --- v2: the BPF program on a bare process ---


def test_v2_only_the_allowed_device_opens(v2: CgroupV2) -> None:
    v2.apply(Resources(devices=NULL_ONLY))
    assert probe(v2, "open /dev/null", "open /dev/zero") == ["ok", "Operation not permitted"]


def test_v2_default_rules(v2: CgroupV2, tmp_dir: Path) -> None:
    v2.apply(Resources(devices=effective_rules((DENY_ALL,), ())))
    node = tmp_dir / "sda"
    assert probe(v2, "open /dev/zero", "open /dev/urandom", f"mknod {node} b 8 0",
                 f"open {node}") == ["ok", "ok", "ok", "Operation not permitted"]


def test_v2_apply_again_replaces_the_program(v2: CgroupV2) -> None:
    v2.apply(Resources(devices=NULL_ONLY))
    v2.apply(Resources(devices=(DeviceRule(allow=True),)))
    # Two programs would both have to allow: /dev/zero would stay refused.
    assert probe(v2, "open /dev/zero") == ["ok"]


def test_v2_a_process_outside_is_not_limited(v2: CgroupV2) -> None:
    v2.apply(Resources(devices=NULL_ONLY))
    with open("/dev/zero", "rb") as f:
        assert f.read(1) == b"\0"


def test_v2_program_goes_with_the_cgroup(v2: CgroupV2) -> None:
    from runtime.cgroups.v2 import devices

    root = v2_root()
    assert root is not None
    where = root / v2.path
    v2.apply(Resources(devices=NULL_ONLY))
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (prog_id,) = devices._attached_ids(where, fd)
    finally:
        os.close(fd)
    v2.remove()

    def gone() -> bool:
        attr = ctypes.create_string_buffer(devices.ATTR_SIZE)
        struct.pack_into("=I", attr, 0, prog_id)
        try:
            os.close(devices._bpf(where, "open", devices.BPF_PROG_GET_FD_BY_ID, attr))
        except OSError as e:
            return e.errno == errno.ENOENT
        return False

    # The kernel releases a removed cgroup's programs from a work queue.
    deadline = time.monotonic() + 10
    while not gone():
        assert time.monotonic() < deadline, f"device program {prog_id} outlived its cgroup"
        time.sleep(0.05)


# --- v1: the kernel reads a list as runtime.cgroups.devices.state does ---


def r(allow: bool, spec: str) -> DeviceRule:
    type_, numbers, access = spec.split()
    major, minor = (None if n == "*" else int(n) for n in numbers.split(":"))
    return DeviceRule(allow=allow, type=type_, major=major, minor=minor, access=access)


@pytest.fixture
def v1(cgroup_parent: str) -> Iterator[tuple[Path, CgroupV1]]:
    need_root()
    hierarchies = v1_hierarchies()
    need("devices" in hierarchies, "no v1 devices controller is mounted")
    cg = CgroupV1Driver(ROOT).cgroup(f"{cgroup_parent}/dev-{uuid.uuid4().hex[:8]}")
    cg.create()
    try:
        yield hierarchies["devices"] / cg.path, cg
    finally:
        cg.remove()


@pytest.mark.parametrize("rules", [
    effective_rules((DENY_ALL,), ()),
    (r(True, "c 1:3 rwm"), r(False, "c 1:3 w")),  # removes w from the exact exception
    (r(True, "c 1:3 rwm"), r(False, "c 1:* w")),  # a broader deny removes nothing
    (r(True, "c 1:3 r"), r(True, "c 1:3 m"), r(True, "b 8:* rw")),  # merged
    (r(True, "c 1:3 rw"), r(False, "c 1:3 rw"), r(True, "c 1:5 r")),  # removed entirely
    (r(True, "c 1:3 rw"), DENY_ALL, r(True, "c 1:5 r")),  # the reset forgets
], ids=["runc", "narrow", "broad-deny", "merge", "remove", "reset"])
def test_v1_kernel_agrees_with_the_state(v1: tuple[Path, CgroupV1],
                                         rules: tuple[DeviceRule, ...]) -> None:
    d, cg = v1
    cg.apply(Resources(devices=rules))
    s = state(rules)
    expected = {f"{k.type} {'*' if k.major is None else k.major}:"
                f"{'*' if k.minor is None else k.minor} {a}" for k, a in s.exceptions}
    assert set((d / "devices.list").read_text().splitlines()) == expected


# --- containers, on each driver this host has ---


@pytest.fixture(params=["v1", "v2"])
def rt(request: pytest.FixtureRequest, tmp_dir: Path, cgroup_parent: str) -> Iterator[Runtime]:
    need_root()
    driver: CgroupDriver
    if request.param == "v1":
        need("devices" in v1_hierarchies(), "no v1 devices controller is mounted")
        driver = CgroupV1Driver(ROOT)
    else:
        root = v2_root()
        need(root is not None, "no cgroup v2 hierarchy is mounted")
        assert root is not None
        driver = CgroupV2Driver(root)
    runtime = Runtime(root=tmp_dir / "state", cgroup_parent=cgroup_parent,
                      cgroup_driver=driver)
    yield runtime
    for found in runtime.containers():
        runtime.delete(found.id, force=True)


def open_each(redirect: str) -> str:
    """A shell loop opening each argument (``<`` to read, ``>`` to write) and printing
    "PATH ok" or "PATH <the error>": the device cgroup is asked at open."""
    return (f'for d in "$@"; do if e=$( (exec 3{redirect}"$d") 2>&1); then echo "$d ok"; '
            'else echo "$d ${e##*: }"; fi; done')


def container(rt: Runtime, rootfs: Path, script: str, *devices: str, redirect: str = "<",
              **linux: Any) -> list[str]:
    cfg = config(rootfs, "sh", "-c", f"{script}\n{open_each(redirect)}", "sh", *devices,
                 **linux)
    code, out = run(rt, f"dev-{uuid.uuid4().hex[:8]}", cfg)
    assert code == 0, out
    return out.splitlines()


RUNC_SPEC = {"devices": [{"allow": False, "access": "rwm"}]}  # what `runc spec` writes


def test_container_default_rules(rt: Runtime, busybox_rootfs: Path) -> None:
    out = container(rt, busybox_rootfs, "mknod /dev/sda b 8 0 && echo mknod ok",
                    "/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty", "/dev/sda",
                    resources=RUNC_SPEC)
    assert out == [
        "mknod ok",
        "/dev/null ok", "/dev/zero ok", "/dev/urandom ok",
        # Allowed; with no controlling terminal the open says so, not EPERM.
        "/dev/tty No such device or address",
        "/dev/sda Operation not permitted",
    ]


def test_container_without_rules_still_gets_the_defaults(rt: Runtime,
                                                         busybox_rootfs: Path) -> None:
    out = container(rt, busybox_rootfs, "mknod /dev/sda b 8 0", "/dev/null", "/dev/sda")
    assert out == ["/dev/null ok", "/dev/sda Operation not permitted"]


def test_container_rule_allows_a_device(rt: Runtime, busybox_rootfs: Path) -> None:
    out = container(rt, busybox_rootfs, "mknod /dev/loop0 b 7 0; mknod /dev/loop1 b 7 1",
                    "/dev/loop0", "/dev/loop1",
                    resources={"devices": [*RUNC_SPEC["devices"],
                                           {"allow": True, "type": "b", "major": 7,
                                            "minor": 0, "access": "r"}]})
    # Past the cgroup, loop0 opens, or says the host has no such loop device.
    assert out[0] in ("/dev/loop0 ok", "/dev/loop0 No such device or address")
    assert out[1] == "/dev/loop1 Operation not permitted"


def test_container_linux_devices_are_allowed(rt: Runtime, busybox_rootfs: Path) -> None:
    # /dev/kmsg (c 1:11) is not among the defaults; listed in linux.devices, it opens
    # (for writing, which needs no capability). c 1:12, not listed, does not.
    out = container(rt, busybox_rootfs, "mknod /dev/other c 1 12", "/dev/kmsg", "/dev/other",
                    redirect=">", resources=RUNC_SPEC,
                    devices=[{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}])
    assert out == ["/dev/kmsg ok", "/dev/other Operation not permitted"]
