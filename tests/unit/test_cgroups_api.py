"""Pins runtime.cgroups' public names, so a change to them is a decision, not an accident."""

from __future__ import annotations

import runtime.cgroups as cgroups
from runtime.cgroups import Cgroup, CgroupDriver, CgroupV1Driver, CgroupV2Driver
from runtime.cgroups.v1 import CgroupV1
from runtime.cgroups.v2 import CgroupV2


def test_public_names() -> None:
    assert set(cgroups.__all__) == {
        "Cgroup",
        "CgroupDriver",
        "CgroupFs",
        "CgroupStats",
        "CgroupV1Driver",
        "CgroupV2Driver",
        "DEFAULT_ROOT",
        "cgroup_version",
        "detect",
        "weight_from_shares",
    }
    for name in cgroups.__all__:
        assert hasattr(cgroups, name), name


def test_drivers_implement_the_interface() -> None:
    # mypy checks the signatures (detect returns either as a CgroupDriver); this keeps
    # the method sets from drifting apart at run time.
    cgroup_methods = {n for n in vars(Cgroup) if not n.startswith("_")} - {"path"}
    for cls in (CgroupV1, CgroupV2):
        assert cgroup_methods <= set(dir(cls)), cls
    for driver in (CgroupV1Driver, CgroupV2Driver):
        assert {"cgroup", "version"} <= set(dir(driver))
        assert {n for n in vars(CgroupDriver) if not n.startswith("_")} <= set(dir(driver))
