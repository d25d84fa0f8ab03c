"""The seed's tornado example through the installed ``podium`` command, against a real
scheduler and a real agent: applied as written (its image replaced by a local busybox
serving on 8888, as web.py does), with Kubernetes' meaning and the warning that its
Service reaches nothing; the round trips users make (get in every format, describe,
logs, exec, scale, delete -f); then the same file fixed, its Service answering.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.examples import tornado
from tests.support.nodes import LocalCluster, need_cluster_tools, wait_for

pytestmark = pytest.mark.root

IMAGE = "podium-test/busybox:tornado"
NODE = "pttn1"
PODIUM = Path(sys.executable).parent / "podium"


def local_tornado(target_port: int | None = None) -> str:
    docs = list(yaml.safe_load_all(tornado()))
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            container.update(image=IMAGE, imagePullPolicy="Never", command=[
                "sh", "-c", "echo serving; hostname > /tmp/index.html; "
                "exec httpd -f -p 8888 -h /tmp"])
        elif doc["kind"] == "Service" and target_port is not None:
            doc["spec"]["ports"][0]["targetPort"] = target_port
    return yaml.safe_dump_all(docs)


class Setup(LocalCluster):
    def __init__(self, tmp: Path, busybox_rootfs: Path, cgroup_parent: str) -> None:
        super().__init__(tmp, busybox_rootfs, cgroup_parent, IMAGE, [NODE], "pttnbr")
        self.tmp = tmp
        self.env = {**os.environ, "PODIUM_SERVER": self.scheduler.address}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PODIUM), *args], capture_output=True, text=True,
                              env=self.env, timeout=60, check=False)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, f"podium {' '.join(args)}: {done.stderr}\n{self.logs()}"
        return done

    def running(self) -> list[str]:
        pods = json.loads(self.ok("get", "pods", "-l", "app=tornado", "-o", "json").stdout)
        return sorted(p["metadata"]["name"] for p in pods["items"]
                      if p["status"].get("phase") == "Running"
                      and not p["metadata"].get("deletionTimestamp"))


@pytest.fixture
def setup(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Setup]:
    need_cluster_tools()
    with Setup(tmp_dir, busybox_rootfs, cgroup_parent) as s:
        yield s


def test_the_tornado_example_through_the_cli(setup: Setup, tmp_dir: Path) -> None:
    s = setup
    s.start()
    wait_for("the node Ready", lambda: s.ready_nodes() == 1, 60, s.logs)
    manifest = tmp_dir / "tornado.yaml"
    manifest.write_text(local_tornado())

    # As written: Kubernetes' meaning kept, and said plainly.
    applied = s.ok("apply", "-f", str(manifest))
    assert applied.stdout.split("\n")[:2] == ["service/tornado-svc created",
                                             "deployment.apps/tornado-deploy created"]
    assert "no selected container declares port 80" in applied.stderr, applied.stderr
    assert s.ok("apply", "-f", str(manifest)).stdout.count("unchanged") == 2
    pods = wait_for("3 replicas Running", lambda: (r if len(r := s.running()) == 3 else None),
                    60, s.logs)

    # Every output format parses back.
    listed = json.loads(s.ok("get", "pods", "-o", "json").stdout)
    assert sorted(p["metadata"]["name"] for p in listed["items"]) == pods
    one = yaml.safe_load(s.ok("get", "pod", pods[0], "-o", "yaml").stdout)
    assert one["spec"]["containers"][0]["image"] == IMAGE and one["kind"] == "Pod"
    assert s.ok("get", "deployments", "-o", "name").stdout.split() == [
        "deployment.apps/tornado-deploy"]
    table = s.ok("get", "services").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP"]
    assert table[1].split()[:2] == ["tornado-svc", "LoadBalancer"]
    described = s.ok("describe", "service", "tornado-svc").stdout
    assert "no selected container declares port 80" in described, described

    # Logs, exec, scale.
    assert s.ok("logs", pods[0]).stdout == "serving\n"
    assert s.ok("exec", pods[0], "--", "cat", "/tmp/index.html").stdout.strip() == pods[0]
    s.ok("scale", "deployment", "tornado-deploy", "--replicas", "1")
    wait_for("1 replica", lambda: len(s.running()) == 1, 60, s.logs)

    # Fixed (targetPort 8888): the Service answers from the node.
    manifest.write_text(local_tornado(target_port=8888))
    s.ok("apply", "-f", str(manifest))
    svc = json.loads(s.ok("get", "service", "tornado-svc", "-o", "json").stdout)
    ip = svc["spec"]["clusterIP"]
    (agent,) = s.agents.values()
    busybox = str(shutil.which("busybox") or "/bin/busybox")

    def answer() -> str | None:
        done = subprocess.run(["nsenter", f"--net={agent.netns}", busybox, "wget", "-qO-",
                               f"http://{ip}/"], capture_output=True, text=True, timeout=10,
                              check=False)
        return done.stdout.strip() or None

    running = s.running()
    assert wait_for("the fixed Service answering", answer, 30, s.logs) in running

    # delete -f removes what the file names.
    deleted = s.ok("delete", "-f", str(manifest)).stdout
    assert "tornado-svc" in deleted and "tornado-deploy" in deleted
    wait_for("the pods gone", lambda: not s.running() and not json.loads(
        s.ok("get", "pods", "-o", "json").stdout)["items"], 60, s.logs)
    missing = s.run("get", "service", "tornado-svc")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ('Error from server (NotFound): services "tornado-svc" '
                                      'not found')
