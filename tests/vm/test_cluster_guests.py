"""The deployment path on three Debian 12 guests: provision.sh, systemd units, a cluster.

The guests are provisioned exactly as the Vagrantfile does it (the same arguments,
derived from each node's index, offline from a wheelhouse), then: every node Ready, a
Deployment's three replicas spread over them, the seed's tornado example (a local
image) and its LoadBalancer Service answering by ClusterIP, NodePort and DNS name,
`systemctl restart podium-agent` restarting no container, and a powered-off
worker's pods moved to the others.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.examples import tornado
from tests.vm.conftest import PROJECT
from tests.vm.image import GuestImage
from tests.vm.nodes import SCHEDULER, node_ip, node_name, provision_args
from tests.vm.qemu import Guest, GuestSpec, Lab

PODIUM = [str(Path(sys.executable).parent / "podium")]
IMAGE = "busybox:vm"
APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: busybox:vm
        imagePullPolicy: Never
        command: ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
        ports:
        - containerPort: 8080
        resources:
          requests:
            cpu: 300m
            memory: 64Mi
"""


def wait(what: str, check: Callable[[], Any], timeout: float, step: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as e:  # e.g. the scheduler still starting: try again
            last = str(e).splitlines()[0]
            time.sleep(step)
            continue
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


class Cluster:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.start = time.monotonic()
        self.phases: list[str] = []

    def mark(self, phase: str) -> None:
        """Note when a phase ended (printed at the end: where the tier's time goes)."""
        self.phases.append(f"{phase} {time.monotonic() - self.start:.0f}s")

    def podium(self, *args: str) -> str:
        r = self.lab.host([*PODIUM, *args], env={**os.environ, "PODIUM_SERVER": SCHEDULER})
        assert r.returncode == 0, f"podium {' '.join(args)}: {r.stderr.strip()}"
        return r.stdout

    def items(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        data = json.loads(self.podium("get", kind, "-o", "json", *selector))
        return list(data.get("items", [data] if "kind" in data else []))

    def ready_nodes(self) -> set[str]:
        ready = set()
        for node in self.items("nodes"):
            for cond in node.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    ready.add(node["metadata"]["name"])
        return ready

    def running_pods(self, app: str = "web") -> dict[str, str]:
        """Running pods of the app (not being deleted) → their node."""
        return {p["metadata"]["name"]: p["spec"].get("nodeName", "")
                for p in self.items("pods", "-l", f"app={app}")
                if p.get("status", {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")}


def container_pids(guest: Guest) -> list[str]:
    """Every process in the pods' cgroups on ``guest`` (the runtime's parent: podium)."""
    out = guest.check("find /sys/fs/cgroup/podium -name cgroup.procs -exec cat {} + "
                      "2>/dev/null | sort -n")
    return out.split()


def dump(lab: Lab) -> str:
    parts = []
    for guest in lab.guests.values():
        if guest.alive():
            r = guest.run("journalctl -u podium-agent -u podium-scheduler --no-pager "
                          "-n 40 -o cat", timeout=60)
            parts.append(f"--- {guest.name}:\n{r.out[-4000:]}")
    return "\n".join(parts)


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_three_guests_provisioned_as_vagrant_does_run_a_deployment(
        vm_image: GuestImage, vm_work: Path, wheelhouse: Path, busybox_tar: Path) -> None:
    # One virtual CPU each: three guests share this machine's two cores.
    specs = [GuestSpec(node_name(i), node_ip(i), memory_mb=1024 if i == 0 else 768, cpus=1)
             for i in range(3)]
    with Lab(vm_image, PROJECT, vm_work, specs, limit=1400) as lab:
        try:
            _scenario(lab, Cluster(lab))
        except BaseException:
            sys.stderr.write(dump(lab))
            raise


def _scenario(lab: Lab, cluster: Cluster) -> None:
    guests = [lab["control"], lab["worker-1"], lab["worker-2"]]
    for g in guests:
        g.wait_ready(timeout=240)
    cluster.mark("booted")
    # Provision all three at once, as `vagrant up` does (the workers' agents retry
    # until the scheduler is up).
    started = [(g, g.start_command(
        "bash /podium/deploy/provision.sh " + " ".join(provision_args(i))
        + " --wheelhouse /vmwork/wheelhouse")) for i, g in enumerate(guests)]
    for g, cmd in started:
        r = g.wait_command(cmd, timeout=600)
        assert r.rc == 0, f"provision.sh on {g.name}: {r.out[-3000:]}"
        assert "provisioned" in r.out
    cluster.mark("provisioned")
    wait("3 nodes Ready", lambda: cluster.ready_nodes() == {"control", "worker-1",
                                                           "worker-2"}, timeout=120)
    # What the README has a user type, in the control VM.
    cluster.mark("3 Ready")
    out = lab["control"].check("podium get nodes", timeout=120)
    assert out.count("Ready") >= 3, out

    # A second run changes nothing, and restarts nothing.
    w1 = lab["worker-1"]
    pid_before = w1.check("systemctl show -p MainPID --value podium-agent").strip()
    again = w1.check("bash /podium/deploy/provision.sh " + " ".join(provision_args(1))
                     + " --wheelhouse /vmwork/wheelhouse", timeout=300)
    assert "nothing changed" in again, again
    assert w1.check("systemctl show -p MainPID --value podium-agent").strip() == pid_before
    cluster.mark("provisioned again")

    # The image on every node, then three replicas.
    imports = [(g, g.start_command(f"podium image import /vmwork/busybox.tar {IMAGE}"))
               for g in guests]
    for g, cmd in imports:
        r = g.wait_command(cmd, timeout=300)
        assert r.rc == 0, f"image import on {g.name}: {r.out[-2000:]}"
    cluster.mark("images imported")
    (lab.work / "web.yaml").write_text(APP)
    cluster.podium("apply", "-f", str(lab.work / "web.yaml"))
    pods = wait("3 replicas Running", lambda: len(cluster.running_pods()) == 3
                and cluster.running_pods(), timeout=300)
    cluster.mark("3 replicas Running")
    # Requests of 300m on one-CPU nodes: the least allocated node wins, so they spread.
    assert len(set(pods.values())) >= 2, f"the replicas did not spread: {pods}"

    _tornado_service(lab, cluster)
    cluster.mark("tornado Service answering")

    # Restarting the agent on a worker restarts no container: the new agent adopts
    # them, and their processes are the same ones.
    victim = next(w for w in ("worker-1", "worker-2") if w in pods.values())
    g = lab[victim]
    before = container_pids(g)
    assert before, f"no container processes on {victim}"
    agent_before = g.check("systemctl show -p MainPID --value podium-agent").strip()
    since = g.check("date +%s").strip()
    g.check("systemctl restart podium-agent")
    wait("the restarted agent adopting its pod", lambda: ": adopted " in g.run(
        f"journalctl -u podium-agent --since @{since} -o cat").out, timeout=90, step=2)
    time.sleep(5)  # a pod loop that wrongly restarted a container would have by now
    assert g.check("systemctl show -p MainPID --value podium-agent").strip() != agent_before
    assert container_pids(g) == before
    restarts = {p["metadata"]["name"]: [c.get("restartCount", 0) for c in
                p.get("status", {}).get("containerStatuses", [])]
                for p in cluster.items("pods")}
    assert all(c == [0] or c == [] for c in restarts.values()), restarts
    cluster.mark("agent restarted")

    # Powering that worker off (its QEMU ended: no shutdown, as when the power goes)
    # moves its pods to the others.
    lab[victim].stop()
    assert not lab[victim].alive()
    moved = wait(f"{victim}'s pods replaced", lambda: (
        len(p := cluster.running_pods()) == 3 and victim not in p.values() and p),
        timeout=180)
    assert victim not in moved.values()
    assert victim not in cluster.ready_nodes()
    cluster.mark("pods moved")
    print("phases:", ", ".join(cluster.phases))


@pytest.fixture(scope="session")
def busybox_tar(vm_work: Path) -> Path:
    """A busybox image as a tar of its root, made from the host's busybox-static."""
    rootfs = vm_work / "busybox-rootfs"
    subprocess.run([sys.executable, "-m", "runtime.images.bases", str(rootfs)], check=True,
                   cwd=PROJECT, capture_output=True)
    tar = vm_work / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    return tar


def local_tornado(target_port: int | None = None) -> str:
    """The seed's tornado.yaml with its image replaced by the local busybox one serving
    on 8888 as web.py does (the guests reach no registry); with ``target_port``, the
    Service fixed to send there."""
    docs = list(yaml.safe_load_all(tornado()))
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            container.update(image=IMAGE, imagePullPolicy="Never", command=[
                "sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 8888 -h /tmp"])
        elif doc["kind"] == "Service" and target_port is not None:
            doc["spec"]["ports"][0]["targetPort"] = target_port
    return yaml.safe_dump_all(docs)


def _tornado_service(lab: Lab, cluster: Cluster) -> None:
    """The seed example as written: applied with Kubernetes' meaning (port 80 to pods on
    8888 reaches nothing) and a warning saying so; fixed, its LoadBalancer answers by
    ClusterIP from every node, by NodePort on every node's address from outside, and by
    its DNS name from inside a pod."""
    manifest = lab.work / "tornado.yaml"
    manifest.write_text(local_tornado())
    r = lab.host([*PODIUM, "apply", "-f", str(manifest)],
                 env={**os.environ, "PODIUM_SERVER": SCHEDULER})
    assert r.returncode == 0, r.stderr
    assert "no selected container declares port 80" in r.stderr, r.stderr
    wait("3 tornado replicas Running", lambda: len(cluster.running_pods("tornado")) == 3,
         timeout=300)
    manifest.write_text(local_tornado(target_port=8888))
    cluster.podium("apply", "-f", str(manifest))
    service = json.loads(cluster.podium("get", "service", "tornado-svc", "-o", "json"))
    cluster_ip = service["spec"]["clusterIP"]
    node_port = service["spec"]["ports"][0]["nodePort"]
    names = set(cluster.running_pods("tornado"))
    wait("the load balancer's ingress: every node", lambda: sorted(
        i["ip"] for i in json.loads(cluster.podium("get", "service", "tornado-svc", "-o",
                                                  "json"))["status"]["loadBalancer"]
        .get("ingress", [])) == sorted(node_ip(i) for i in range(3)), timeout=60)
    def ask(guest: Guest) -> str:
        """A pod's name through the ClusterIP from ``guest``, or "" (refused until the
        nodes have the fixed port's endpoints)."""
        out = guest.run(f"timeout 5 busybox wget -qO- http://{cluster_ip}/").out.strip()
        return out if out in names else ""

    def ask_node_port(i: int) -> str:
        """The same through node ``i``'s NodePort, from outside every guest."""
        got = lab.host(["timeout", "5", "busybox", "wget", "-qO-",
                        f"http://{node_ip(i)}:{node_port}/"]).stdout.strip()
        return got if got in names else ""

    for guest in (lab["control"], lab["worker-1"], lab["worker-2"]):
        wait(f"the ClusterIP from {guest.name}", functools.partial(ask, guest), timeout=60)
    for i in range(3):
        wait(f"the NodePort on {node_name(i)}", functools.partial(ask_node_port, i),
             timeout=60)
    pod = sorted(names)[0]
    lookup = cluster.podium("exec", pod, "--", "nslookup", "tornado-svc.default.svc.cluster.local")
    assert cluster_ip in lookup, lookup
    by_name = cluster.podium("exec", pod, "--", "wget", "-qO-", "http://tornado-svc/")
    assert by_name.strip() in names, by_name
    # The agents' "why no traffic" event from the first apply, kept on the Service.
    events = cluster.podium("describe", "service", "tornado-svc")
    assert "no selected container declares port 80" in events, events
