"""What a node needs before it can run a pod, checked once when the agent starts.

A VM without overlayfs, without cgroup controllers or without ``nft``/``ip``
would otherwise fail at its first pod, with an error about that pod. Here each
missing piece is one line naming what is missing and what to do about it.

Everything read is a parameter (the /proc and cgroupfs roots, the mount table,
``which``, the effective uid, the module loader), so unit tests use fakes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from runtime.cgroups import CgroupV1Driver, cgroup_version
from runtime.errors import CgroupError

MOUNTINFO = Path("/proc/self/mountinfo")

# The controllers pod limits are written to: a node without one cannot run a pod
# that asks for that limit.
CONTROLLERS = ("memory", "cpu", "pids")
COMMANDS = ("nft", "ip")


def load_module(name: str) -> bool:
    """``modprobe NAME``; False when it fails or modprobe is missing."""
    try:
        return subprocess.run(["modprobe", name], capture_output=True).returncode == 0
    except OSError:
        return False


def check_node(
    *,
    proc: Path = Path("/proc"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    mountinfo: Path = MOUNTINFO,
    which: Callable[[str], str | None] = shutil.which,
    euid: Callable[[], int] = os.geteuid,
    load: Callable[[str], bool] = load_module,
) -> list[str]:
    """The node's problems, one line each; [] when it can run pods."""
    problems: list[str] = []
    if euid() != 0:
        problems.append("not root: podium-agent makes namespaces, mounts and cgroups; "
                        "run it as root (the systemd unit does)")
    if not _has_overlay(proc) and not (load("overlay") and _has_overlay(proc)):
        problems.append(f"no overlay filesystem: not in {proc / 'filesystems'} and "
                        "`modprobe overlay` failed (the kernel needs CONFIG_OVERLAY_FS)")
    problem = _cgroup_problem(cgroup_root, mountinfo)
    if problem:
        problems.append(problem)
    for command in COMMANDS:
        if which(command) is None:
            package = "nftables" if command == "nft" else "iproute2"
            problems.append(f"no `{command}` command on PATH: install {package}")
    return problems


def _has_overlay(proc: Path) -> bool:
    try:
        text = (proc / "filesystems").read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["overlay"] for line in text.splitlines())


def _cgroup_problem(root: Path, mountinfo: Path) -> str:
    if cgroup_version(root, mountinfo=mountinfo) == 2:
        try:
            offered = set((root / "cgroup.controllers").read_text().split())
        except OSError as e:
            return f"cgroup v2 at {root}: cannot read cgroup.controllers ({e.strerror or e})"
        missing = [c for c in CONTROLLERS if c not in offered]
        if missing:
            return (f"cgroup v2 at {root} offers no {', '.join(missing)} controller "
                    f"(cgroup.controllers: {' '.join(sorted(offered)) or 'empty'}): "
                    "enable them on the kernel command line")
        return ""
    try:
        hierarchies = CgroupV1Driver(root, mountinfo=mountinfo).hierarchies
    except CgroupError:
        hierarchies = {}  # no v1 hierarchy at all
    missing = [c for c in CONTROLLERS if c not in hierarchies]
    if len(missing) == len(CONTROLLERS):
        return (f"no cgroup controllers: {root} is neither a cgroup v2 mount with "
                f"{', '.join(CONTROLLERS)} nor a set of cgroup v1 hierarchies for them")
    if missing:
        return (f"cgroup v1 under {root} has no hierarchy for {', '.join(missing)}: "
                "mount it, or boot with cgroup v2")
    return ""
