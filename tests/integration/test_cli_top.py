"""``podium top`` against a real scheduler and agent: figures read from the pod's
cgroups by the agent, through the scheduler, as kubectl's tables; then the agent
is killed and ``top`` names the node it cannot reach."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.api import Client
from client.cli import main
from tests.support.nodes import LocalCluster, need_cluster_tools, wait_for

pytestmark = pytest.mark.root

IMAGE = "podium-test/busybox:top"
NODE = "ptop1"
POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: ptop-busy, labels: {{app: ptop}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "while :; do :; done"]
    resources: {{limits: {{cpu: 200m}}}}
  - name: idle
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "while :; do sleep 1; done"]
"""


class Setup(LocalCluster):
    def __init__(self, tmp: Path, busybox_rootfs: Path, cgroup_parent: str) -> None:
        super().__init__(tmp, busybox_rootfs, cgroup_parent, IMAGE, [NODE], "ptopbr")
        self.agent = self.agents[NODE]
        self.server = self.scheduler.address


@pytest.fixture
def setup(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Setup]:
    need_cluster_tools()
    with Setup(tmp_dir, busybox_rootfs, cgroup_parent) as s:
        yield s


def run(capsys: pytest.CaptureFixture[str], server: str, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--server", server])
    out, err = capsys.readouterr()
    return code, out, err


def test_top_reads_the_agents_figures_and_names_a_node_it_cannot_reach(
        setup: Setup, tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def podium(*argv: str) -> tuple[int, str, str]:
        return run(capsys, setup.server, *argv)

    setup.start()
    wait_for("the node Ready", lambda: setup.ready_nodes() == 1, 60, setup.logs)
    with Client(setup.server) as c:
        (tmp_dir / "pod.yaml").write_text(POD)
        assert podium("apply", "-f", str(tmp_dir / "pod.yaml"))[0] == 0
        wait_for("the pod Running", lambda: c.get("Pod", "ptop-busy").status.phase == "Running"
                 and all(cs.ready or cs.state.WhichOneof("state") == "running"
                         for cs in c.get("Pod", "ptop-busy").status.container_statuses),
                 60, setup.logs)

    code, out, err = podium("top", "pods", "--containers", "--interval", "0.5")
    assert (code, err) == (0, ""), setup.logs()
    lines = out.splitlines()
    assert lines[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"spin", "idle"}
    for row in rows.values():
        assert row[0] == "ptop-busy"
        assert re.fullmatch(r"\d+m", row[2]) and re.fullmatch(r"\d+Mi", row[3]), row
    assert int(rows["spin"][2][:-1]) > 0  # a busy loop uses CPU, read from its cgroup

    code, out, err = podium("top", "pods", "-l", "app=ptop")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert out.splitlines()[1].split()[0] == "ptop-busy"

    code, out, err = podium("top", "nodes")
    assert (code, err) == (0, "")
    name, cpu, cpu_share, memory, memory_share = out.splitlines()[1].split()
    assert name == NODE and re.fullmatch(r"\d+m", cpu) and re.fullmatch(r"\d+Mi", memory)
    assert re.fullmatch(r"\d+%", cpu_share) and re.fullmatch(r"\d+%", memory_share)
    assert int(memory[:-2]) > 0  # a whole node uses some memory

    # The agent dies; its node is still Ready to the scheduler for a while, and
    # `top` says which node it could not ask.
    setup.agent.kill()
    code, out, err = podium("top", "pods")
    assert code == 1 and out == ""
    assert err == (f"podium: top: no figures from node {NODE}: cannot reach the agent of "
                   f"node {NODE}: connection refused\n")
    code, out, err = podium("top", "nodes")
    assert code == 1 and out.splitlines()[1].split() == [NODE] + ["<unknown>"] * 4
