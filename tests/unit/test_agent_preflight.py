"""The agent's start-up check of the node, against fake /proc, cgroupfs and tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.preflight import check_node

FILESYSTEMS = "nodev\tsysfs\nnodev\tproc\n\text4\nnodev\toverlay\n"
NO_OVERLAY = "nodev\tsysfs\nnodev\tproc\n\text4\n"


class Node:
    """A fake node: /proc/filesystems, a cgroupfs tree, a mount table, PATH and uid."""

    def __init__(self, root: Path) -> None:
        self.proc = root / "proc"
        self.proc.mkdir()
        (self.proc / "filesystems").write_text(FILESYSTEMS)
        self.cgroup = root / "cgroup"
        self.cgroup.mkdir()
        self.mountinfo = root / "mountinfo"
        self.mountinfo.write_text("")
        self.commands = {"nft": "/usr/sbin/nft", "ip": "/usr/bin/ip"}
        self.uid = 0
        self.loaded: list[str] = []
        self.modprobe_adds_overlay = False

    def v2(self, controllers: str) -> None:
        (self.cgroup / "cgroup.controllers").write_text(controllers + "\n")
        self.mountinfo.write_text(
            f"30 1 0:26 / {self.cgroup} rw - cgroup2 cgroup2 rw,nsdelegate\n")

    def v1(self, *hierarchies: str) -> None:
        lines = []
        for i, names in enumerate(hierarchies):
            point = self.cgroup / names
            point.mkdir()
            lines.append(f"{40 + i} 1 0:{40 + i} / {point} rw - cgroup cgroup rw,{names}")
        self.mountinfo.write_text("\n".join(lines) + "\n")

    def load(self, name: str) -> bool:
        self.loaded.append(name)
        if self.modprobe_adds_overlay:
            (self.proc / "filesystems").write_text(FILESYSTEMS)
        return self.modprobe_adds_overlay

    def check(self) -> list[str]:
        return check_node(proc=self.proc, cgroup_root=self.cgroup, mountinfo=self.mountinfo,
                          which=self.commands.get, euid=lambda: self.uid, load=self.load)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_a_pure_v2_node_with_everything_passes(node: Node) -> None:
    node.v2("cpuset cpu io memory hugetlb pids rdma misc")
    assert node.check() == []
    assert node.loaded == []  # overlay was already there: nothing loaded


def test_a_v1_node_with_memory_cpu_and_pids_passes(node: Node) -> None:
    node.v1("cpu,cpuacct", "memory", "pids", "freezer")
    assert node.check() == []


def test_overlay_is_loaded_when_missing(node: Node) -> None:
    node.v2("cpu memory pids")
    (node.proc / "filesystems").write_text(NO_OVERLAY)
    node.modprobe_adds_overlay = True
    assert node.check() == []
    assert node.loaded == ["overlay"]


def test_no_overlay_at_all_is_one_line(node: Node) -> None:
    node.v2("cpu memory pids")
    (node.proc / "filesystems").write_text(NO_OVERLAY)
    problems = node.check()
    assert len(problems) == 1
    assert "overlay" in problems[0] and "modprobe overlay" in problems[0]
    assert "\n" not in problems[0]


def test_v2_without_controllers_names_the_missing_ones(node: Node) -> None:
    node.v2("hugetlb")
    (problem,) = node.check()
    assert "memory, cpu, pids" in problem
    assert "cgroup v2" in problem and "hugetlb" in problem


def test_v2_missing_one_controller_names_only_it(node: Node) -> None:
    node.v2("cpu memory io")
    (problem,) = node.check()
    assert "no pids controller" in problem


def test_v1_missing_pids_names_it(node: Node) -> None:
    node.v1("cpu,cpuacct", "memory")
    (problem,) = node.check()
    assert "pids" in problem and "memory" not in problem.split("for")[1]


def test_no_cgroups_at_all(node: Node) -> None:
    (problem,) = node.check()  # neither a cgroup2 mount nor v1 hierarchies
    assert "no cgroup controllers" in problem


def test_missing_commands_and_not_root_each_get_a_line(node: Node) -> None:
    node.v2("cpu memory pids")
    node.commands = {}
    node.uid = 1000
    problems = node.check()
    assert len(problems) == 3
    assert any(p.startswith("not root") for p in problems)
    assert any("`nft`" in p and "nftables" in p for p in problems)
    assert any("`ip`" in p and "iproute2" in p for p in problems)
    assert all("\n" not in p for p in problems)
