"""The runtime's cgroup tests inside a Debian 12 guest: pure cgroup v2, under systemd.

This machine (and CI) mounts cgroup v1 controllers; the VMs users run mount cgroup
v2 only. The guest runs the real integration tests for limits, OOM kills, pids,
freezing, stats, kill and removal from the shared source tree, as root, with
PODIUM_REQUIRE_ALL=1 so nothing may skip, and writes a JUnit report the host reads.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.vm.conftest import PROJECT
from tests.vm.image import GuestImage
from tests.vm.qemu import GuestSpec, Lab

# The cgroup driver's own tests (the v1 ones need v1 hierarchies: not here), the
# runtime's tests of limits, OOM, pids, freeze, stats and kill, and the devices
# cgroup (a BPF program on v2).
SELECTION = ("tests/integration/test_cgroups.py", "tests/integration/test_runtime.py",
             "tests/integration/test_devices.py")
DESELECT = "not v1"


@pytest.mark.vm
@pytest.mark.timeout(1200)
def test_runtime_cgroup_tests_pass_in_a_pure_v2_guest(
        vm_image: GuestImage, vm_work: Path, guest_site: Path) -> None:
    results = vm_work / "results"
    results.mkdir(exist_ok=True)
    report = results / "cgroup-v2.xml"
    with Lab(vm_image, PROJECT, vm_work, [GuestSpec("cgv2")], limit=1000) as lab:
        guest = lab["cgv2"]
        guest.wait_ready(timeout=180)
        mounts = guest.check("stat -fc %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers;"
                             " grep -c ' cgroup ' /proc/mounts || true")
        fstype, controllers, v1_mounts = mounts.split("\n")[:3]
        assert fstype == "cgroup2fs"
        assert {"cpu", "memory", "pids", "cpuset"} <= set(controllers.split())
        assert v1_mounts == "0"
        run = guest.run(
            "cd /podium && PYTHONPATH=/vmwork/site PYTHONDONTWRITEBYTECODE=1 "
            "PODIUM_REQUIRE_ALL=1 python3 -m pytest -p no:cacheprovider -q "
            f"-k '{DESELECT}' --junitxml=/vmwork/results/{report.name} " + " ".join(SELECTION),
            timeout=900)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 20, run.out[-3000:]
    assert (counts["failures"], counts["errors"], counts["skipped"]) == (0, 0, 0), \
        run.out[-6000:]
    assert run.rc == 0, run.out[-3000:]
    names = {case.get("name", "") for case in suite.iter("testcase")}
    for must in ("test_v2_process_freeze_kill_remove", "test_v2_limits_where_offered",
                 "test_memory_hog_is_oom_killed_and_reported",
                 "test_fork_bomb_is_held_by_the_pids_limit", "test_pause_and_resume"):
        assert must in names
