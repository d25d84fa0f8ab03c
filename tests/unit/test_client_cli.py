"""``podium``'s cluster verbs against a real in-process scheduler with hollow nodes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.api import Client
from client.cli import main
from proto.kube import load_objects
from tests.support.cluster import HollowNode, running_scheduler
from tests.support.cluster import client as raw_client
from tests.support.examples import tornado

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox:latest
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def server() -> Iterator[str]:
    with running_scheduler() as scheduler, raw_client(scheduler.port) as stub:
        node = HollowNode(stub, "node-1", cpu="2")
        try:
            yield f"127.0.0.1:{scheduler.port}"
        finally:
            node.close()


@pytest.fixture
def podium(server: str, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--server", server])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def running_pods(server: str, n: int) -> None:
    with Client(server) as c:
        wait_for(lambda: sum(p.status.phase == "Running" for p in c.list("pods")) == n,
                 f"{n} running pods")


def test_apply_then_reapply_is_unchanged(podium: Run, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(WEB)
    assert podium("apply", "-f", str(path)) == (
        0, "deployment.apps/web created\nservice/web created\n", "")
    assert podium("apply", "-f", str(tmp_path)) == (
        0, "deployment.apps/web unchanged\nservice/web unchanged\n", "")


def test_one_bad_document_changes_nothing(podium: Run, server: str, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(WEB.replace("targetPort: 8080", "targetPortz: 8080"))
    code, out, err = podium("apply", "-f", str(path))
    assert (code, out) == (1, "")
    assert err.startswith("podium: web.yaml, document 2: spec.ports[0].targetPortz: "
                          "unknown field")
    assert "(line " in err
    with Client(server) as c:
        assert c.list("deployments") == [] and c.list("services") == []


def test_invalid_object_found_by_dry_run_changes_nothing(podium: Run, server: str,
                                                         tmp_path: Path) -> None:
    # Well-formed YAML the server refuses: the second document has no name.
    path = tmp_path / "web.yaml"
    nameless = WEB.replace("  name: web\nspec:\n  selector", "  labels: {}\nspec:\n  selector")
    path.write_text(nameless)
    code, out, err = podium("apply", "-f", str(path))
    assert (code, out) == (1, "")
    assert err.startswith("Error from server (Invalid): ")
    with Client(server) as c:
        assert c.list("deployments") == []


def test_get_tables_and_json(podium: Run, server: str, tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB)
    podium("apply", "-f", str(tmp_path / "web.yaml"))
    running_pods(server, 2)
    code, out, _ = podium("get", "pods", "-o", "wide")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE",
                                             "IP", "NODE"]
    assert len(lines) == 3
    assert all(line.split()[1:3] == ["1/1", "Running"] and line.split()[-1] == "node-1"
               for line in lines[1:])
    code, out, _ = podium("get", "po", "-A")
    assert out.splitlines()[1].startswith("default ")
    code, out, _ = podium("get", "svc", "web")
    assert out.splitlines()[1].split()[:2] == ["web", "ClusterIP"]
    wait_for(lambda: podium("get", "deploy")[1].splitlines()[1].split()[1] == "2/2",
             "the deployment to be ready")

    code, out, _ = podium("get", "deployment", "web", "-o", "json")
    doc = json.loads(out)
    assert doc["kind"] == "Deployment" and doc["spec"]["replicas"] == 2
    parsed = load_objects(out, "out.json")[0].object  # parses back
    assert parsed.deployment.metadata.name == "web"
    code, out, _ = podium("get", "pods", "-o", "json")
    assert json.loads(out)["kind"] == "List" and len(json.loads(out)["items"]) == 2
    code, out, _ = podium("get", "svc", "-o", "name")
    assert out == "service/web\n"
    code, out, _ = podium("get", "no")
    assert out.splitlines()[1].split()[:2] == ["node-1", "Ready"]


def test_delete_by_file_and_by_name(podium: Run, server: str, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(WEB)
    podium("apply", "-f", str(path))
    assert podium("delete", "-f", str(path)) == (
        0, "deployment.apps/web deleted\nservice/web deleted\n", "")
    assert podium("delete", "svc", "web") == (
        1, "", 'Error from server (NotFound): services "web" not found\n')
    assert podium("delete", "svc/web", "--ignore-not-found") == (0, "", "")


def test_scale_and_rollout(podium: Run, server: str, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(WEB)
    podium("apply", "-f", str(path))
    assert podium("scale", "deployment/web", "--replicas", "3") == (
        0, "deployment.apps/web scaled\n", "")
    running_pods(server, 3)
    code, out, _ = podium("rollout", "status", "deployment/web", "--timeout", "20")
    assert code == 0 and out.endswith('deployment "web" successfully rolled out\n')

    path.write_text(WEB.replace("busybox:latest", "busybox:1.36"))
    podium("apply", "-f", str(path))
    wait_for(lambda: podium("rollout", "history", "deploy/web")[1].count("\n") == 4,
             "a second revision")
    code, out, _ = podium("rollout", "history", "deployment", "web")
    assert out.splitlines()[2:] == ["1         busybox:latest", "2         busybox:1.36"]
    assert podium("rollout", "undo", "deployment/web") == (
        0, "deployment.apps/web rolled back\n", "")
    with Client(server) as c:
        assert c.get("deploy", "web").spec.template.spec.containers[0].image == "busybox:latest"


def test_describe_pending_pod_says_why(podium: Run, tmp_path: Path) -> None:
    pod = ("apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n"
           "  - name: c\n    image: busybox\n    resources: {requests: {cpu: '64'}}\n")
    (tmp_path / "pod.yaml").write_text(pod)
    assert podium("create", "-f", str(tmp_path / "pod.yaml"))[1] == "pod/big created\n"
    wait_for(lambda: "FailedScheduling" in podium("describe", "pod", "big")[1],
             "a scheduling verdict")
    code, out, _ = podium("describe", "pod", "big")
    assert code == 0
    lines = out.splitlines()
    assert "Pending" in next(line for line in lines if line.startswith("Status:"))
    condition = next(line for line in lines if line.split()[:1] == ["PodScheduled"])
    assert condition.split()[1:3] == ["False", "Unschedulable"]
    assert "0/1 nodes are available: 1 Insufficient cpu." in condition


def test_errors_and_exit_codes(podium: Run) -> None:
    assert podium("get", "pods", "nope") == (
        1, "", 'Error from server (NotFound): pods "nope" not found\n')
    assert podium("get", "gizmos") == (
        1, "", 'podium: the server doesn\'t have a resource type "gizmos"\n')
    code, _, err = podium("delete")
    assert code == 2 and err.startswith("podium: delete:")
    code, out, err = podium("get", "pods")
    assert (code, out, err) == (0, "", "No resources found in default namespace.\n")


def test_server_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "pods", "--server", "127.0.0.1:1"]) == 1
    out, err = capsys.readouterr()
    assert err == ("podium: cannot reach the scheduler at 127.0.0.1:1: connection refused "
                   "— is it running? try `podium up`\n")
    assert "Traceback" not in err


def test_every_verb_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("apply", "create", "delete", "get", "describe", "logs", "exec", "scale",
                 "rollout", "cluster-info", "version"):
        with pytest.raises(SystemExit) as done:
            main([verb, "--help"])
        assert done.value.code == 0
        assert "examples:\n  podium " + verb in capsys.readouterr().out


def test_logs_and_exec_reach_the_pods_node(podium: Run, server: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # Hollow nodes have no agent to proxy to: the scheduler says so, which shows
    # the request (options before and after POD, the command after --) got there.
    (tmp_path / "web.yaml").write_text(WEB)
    podium("apply", "-f", str(tmp_path / "web.yaml"))
    running_pods(server, 2)
    with Client(server) as c:
        pod = c.list("pods")[0].metadata.name
    no_agent = "Error from server (BadRequest): node node-1 reports no agent endpoint\n"
    assert podium("logs", pod, "--tail", "5") == (1, "", no_agent)
    assert main(["exec", "-c", "httpd", pod, "--server", server, "--", "ls", "-l"]) == 1
    assert capsys.readouterr() == ("", no_agent)
    code, _, err = podium("exec", pod)
    assert code == 2 and "give the command after --" in err


def test_the_tornado_example_applies_as_written(podium: Run, server: str,
                                                tmp_path: Path) -> None:
    """../shared/examples/tornado.yaml, with only its image swapped for a local one:
    an old extensions/v1beta1 Deployment without a selector, a LoadBalancer Service."""
    text = tornado()
    copy = tmp_path / "tornado.yaml"
    copy.write_text(re.sub(r"image: \S+", "image: podium/tornado:1", text))
    code, out, _ = podium("apply", "-f", str(copy))
    assert code == 0, out
    assert out.splitlines() == ["service/tornado-svc created",
                                "deployment.apps/tornado-deploy created"]
    with Client(server) as c:
        deadline = time.monotonic() + 10
        while len([p for p in c.list("Pod", label_selector="app=tornado")
                   if p.status.phase == "Running"]) < 3:
            assert time.monotonic() < deadline, "3 tornado pods never ran"
            time.sleep(0.1)
        deploy = c.get("Deployment", "tornado-deploy")
        assert dict(deploy.spec.selector.match_labels) == {"app": "tornado"}
    code, out, _ = podium("apply", "-f", str(copy))
    assert code == 0 and out.count("unchanged") == 2


def test_server_and_namespace_before_the_command(server: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(WEB)
    assert main(["--server", server, "-n", "default", "apply", "-f", str(manifest)]) == 0
    assert main(["-s", server, "get", "services", "-o", "name"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "service/web"
    # After the command it still wins over nothing; before it, a later one wins.
    assert main(["--server", "127.0.0.1:1", "get", "svc", "web", "--server", server]) == 0
    assert "web" in capsys.readouterr().out


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    import os
    import subprocess
    import sys

    # `podium completion bash | true`: the reader is gone before a byte is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from client.cli import main; "
         "sys.exit(main(['completion', 'bash']))"],
        stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 141 and err == b"", err
