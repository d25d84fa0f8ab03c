"""What a test may leave behind on the host, snapshotted before and compared after.

Only things a podium test can make are watched, so tests of several sessions on one
machine do not see each other: mounts below the test's temporary directories or
naming podium, cgroups below the session's test cgroup parent and below ``podium``,
network devices and nftables tables whose names start with the test prefix or
``podium``, and processes descended from the test process (pytest is a child
subreaper, so a container orphaned by its caller is re-parented to it and counts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

TEST_PREFIX = "pt"  # network devices, nftables tables
CGROUP_ROOT = Path("/sys/fs/cgroup")


def session_cgroup_parent() -> str:
    """The cgroup parent every test container goes under, one per test session."""
    return f"podium-test-{os.getpid()}"


def _mounts(markers: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point, source = fields[4], fields[fields.index("-") + 2]
            if any(m in point or m in source for m in markers):
                found.add(point)
    return found


def _cgroups(parents: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    if not CGROUP_ROOT.exists():
        return found
    # v1: one hierarchy per directory below the root; v2: the root itself.
    for hierarchy in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()]:
        for parent in parents:
            base = hierarchy / parent
            if base.is_dir():
                for dirpath, dirnames, _ in os.walk(base):
                    for d in dirnames:
                        found.add(str(Path(dirpath, d)))
    return found


def _netdevs() -> set[str]:
    return {
        name
        for name in os.listdir("/sys/class/net")
        if name.startswith(TEST_PREFIX) or name.startswith("podium")
    }


def _nft_tables() -> set[str]:
    if shutil.which("nft") is None:
        return set()
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {
        line.strip()
        for line in out.splitlines()
        if line.split()[-1:] and line.split()[-1].startswith((TEST_PREFIX, "podium"))
    }


def _processes() -> set[tuple[int, str]]:
    me = psutil.Process()
    found = set()
    for child in me.children(recursive=True):
        try:
            found.add((child.pid, " ".join(child.cmdline())[:120]))
        except psutil.Error:
            pass
    return found


@dataclass(frozen=True)
class Snapshot:
    mounts: set[str]
    cgroups: set[str]
    netdevs: set[str]
    nft_tables: set[str]
    processes: set[tuple[int, str]]

    @classmethod
    def take(cls, mount_markers: tuple[str, ...]) -> Snapshot:
        return cls(
            mounts=_mounts(mount_markers),
            cgroups=_cgroups((session_cgroup_parent(), "podium")),
            netdevs=_netdevs(),
            nft_tables=_nft_tables(),
            processes=_processes(),
        )

    def leaked_since(self, before: Snapshot) -> list[str]:
        problems = []
        for kind in ("mounts", "cgroups", "netdevs", "nft_tables", "processes"):
            new = getattr(self, kind) - getattr(before, kind)
            if new:
                problems.append(f"{kind}: {sorted(new)}")
        return problems
