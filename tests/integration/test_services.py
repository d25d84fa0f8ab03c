"""Services, cluster DNS and the pod network across nodes, end to end.

A scheduler and three agents, each agent in a network namespace of its own,
the namespaces joined by a test bridge (tests/support/wire.py) as machines on
one switch are. Real containers (busybox httpd) answer with their pod's name
and the client address they see. One scenario, in order, because each step
builds on the cluster the previous one left:

- pod to pod across nodes, the source address kept (no masquerade inside the
  pod network);
- a ClusterIP Service over 3 replicas on the three nodes answers from all of
  them, reached from a node and, by its DNS name, from inside a pod;
- a pod made unready leaves the rotation, and returns when ready again;
- the LoadBalancer's NodePort answers on every node's address, from outside the
  nodes, and its ingress lists the nodes' addresses;
- a Service without ready endpoints refuses connections at once;
- a killed node's endpoints move to the others and the Service keeps answering.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.kube import load_objects
from proto.podium.v1 import agent_pb2, cluster_pb2, pod_pb2
from tests.support.nodes import LocalCluster, need_cluster_tools, wait_for
from tests.support.wire import OUTSIDE, Wire

pytestmark = pytest.mark.root

IMAGE = "podium-test/busybox:services"
NODES = ("pts1", "pts2", "pts3")

# Each replica serves its own name at / and, through CGI, the address of the
# client it sees; it is ready while no "unready-<its name>" file exists in the
# test's shared directory (a hostPath), so the test can flip readiness.
WORKLOAD = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: [sh, -c]
        args:
        - |
          mkdir -p /www/cgi-bin
          hostname > /www/index.html
          printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho "$REMOTE_ADDR"\\n' \\
            > /www/cgi-bin/who
          chmod +x /www/cgi-bin/who
          exec httpd -f -p 8080 -h /www
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          exec: {{command: [sh, -c, 'test ! -e /shared/unready-$(hostname)']}}
          periodSeconds: 1
          failureThreshold: 1
        volumeMounts:
        - {{name: shared, mountPath: /shared}}
      volumes:
      - name: shared
        hostPath: {{path: SHARED}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  type: LoadBalancer
  selector: {{app: echo}}
  ports:
  - {{port: 80, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata: {{name: nobody}}
spec:
  selector: {{app: nobody}}
  ports:
  - {{port: 80, targetPort: 8080}}
"""

# A pod that looks the Service up by name from inside the cluster: the short
# name through the search list, then the full one; prints what it got.
CLIENT = f"""
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {NODES[0]}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sh, -c]
    args:
    - |
      nslookup echo.default.svc.cluster.local
      until timeout 3 wget -q -O /tmp/short http://echo/; do sleep 0.2; done
      until timeout 3 wget -qO /tmp/full http://echo.default.svc.cluster.local/; do sleep 0.2; done
      echo "short=$(cat /tmp/short) full=$(cat /tmp/full)"
      for ip in $PEERS; do
        echo "peer $ip saw $(timeout 3 wget -q -O - http://$ip:8080/cgi-bin/who)"
      done
      sleep 3600
"""


class Cluster(LocalCluster):
    def __init__(self, tmp: Path, busybox_rootfs: Path, cgroup_parent: str) -> None:
        self.busybox = busybox_rootfs / "bin" / "busybox"
        self.shared = tmp / "shared"
        self.shared.mkdir()
        super().__init__(tmp, busybox_rootfs, cgroup_parent, IMAGE, NODES, "ptsbr",
                         ("--node-grace", "2", "--eviction-timeout", "2",
                          "--heartbeat-interval", "0.5"), Wire(tmp, "ptsw"))

    def apply(self, manifests: str) -> None:
        for converted in load_objects(manifests.replace("SHARED", str(self.shared))):
            self.api.Apply(cluster_pb2.ApplyRequest(object=converted.object), timeout=10)

    def get(self, kind: str, name: str) -> cluster_pb2.Object:
        return self.api.Get(cluster_pb2.GetRequest(kind=kind, namespace="default", name=name),
                            timeout=5)

    def echo_pods(self) -> list[pod_pb2.Pod]:
        items = self.api.List(cluster_pb2.ListRequest(kind="Pod", label_selector="app=echo"),
                              timeout=5).items
        return [i.pod for i in items if not i.pod.metadata.HasField("deletion_timestamp")]

    def ready_endpoints(self, name: str = "echo") -> dict[str, str]:
        """The Service's ready addresses: pod name -> node name."""
        try:
            endpoints = self.get("Endpoints", name).endpoints
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise
        return {a.target_ref.name: a.node_name
                for s in endpoints.subsets for a in s.addresses}

    def wget(self, netns: Path, url: str) -> str | None:
        """One request from inside ``netns`` (a node's, or the wire's); None on failure."""
        # (busybox's wget -T crashes in Debian's static build: the timeout is ours)
        try:
            done = subprocess.run(
                ["nsenter", f"--net={netns}", str(self.busybox), "wget", "-q", "-O", "-", url],
                capture_output=True, text=True, timeout=3, check=False)
        except subprocess.TimeoutExpired:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    def answers(self, netns: Path, url: str, count: int) -> Counter[str | None]:
        return Counter(self.wget(netns, url) for _ in range(count))


@pytest.fixture
def cluster(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Cluster]:
    need_cluster_tools()
    with Cluster(tmp_dir, busybox_rootfs, cgroup_parent) as c:
        yield c


def _client_output(c: Cluster) -> str:
    chunks = c.api.Logs(agent_pb2.LogsRequest(namespace="default", pod="client"), timeout=5)
    try:
        return b"".join(chunk.data for chunk in chunks).decode(errors="replace")
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
            return ""  # not started on its node yet
        raise


def test_services_dns_and_the_pod_network_across_nodes(cluster: Cluster) -> None:
    c = cluster
    c.start()
    wire = c.wire
    assert wire is not None
    wait_for("3 nodes Ready", lambda: c.ready_nodes() == 3, logs=c.logs)

    c.apply(WORKLOAD)
    service = c.get("Service", "echo").service
    cluster_ip, node_port = service.spec.cluster_ip, service.spec.ports[0].node_port
    assert cluster_ip.startswith("10.96.") and 30000 <= node_port <= 32767
    def spread(avoid: str = "") -> dict[str, str] | None:
        """The ready endpoints once there are 3, none on ``avoid``, on 3 or 2 nodes."""
        e = c.ready_endpoints()
        nodes = set(e.values())
        return e if len(e) == 3 and avoid not in nodes and len(nodes) >= 3 - bool(avoid) else None

    placed = wait_for("3 ready endpoints, one per node", spread, timeout=60, logs=c.logs)
    pods = {p.metadata.name: p for p in c.echo_pods()}
    assert set(placed) == set(pods)
    by_node = {p.spec.node_name: p for p in pods.values()}

    # Pod to pod across nodes, and by name through the cluster DNS, from inside a pod.
    peers = " ".join(p.status.pod_ip for node, p in by_node.items() if node != NODES[0])
    c.apply(CLIENT.replace("$PEERS", peers))
    out = wait_for("the client pod's lookups", lambda: (
        o if "peer" in (o := _client_output(c)) and o.count("peer") == 2 else None),
        timeout=60, logs=lambda: f"--- client pod\n{_client_output(c)}\n{c.logs()}")
    client_ip = c.get("Pod", "client").pod.status.pod_ip
    assert f"Address: {cluster_ip}" in out or f"Address 1: {cluster_ip}" in out, out
    short = out.split("short=", 1)[1].split()[0]
    full = out.split("full=", 1)[1].split()[0]
    assert short in pods and full in pods, out
    for ip in peers.split():  # httpd shows the client as an IPv4-mapped address
        assert f"peer {ip} saw [::ffff:{client_ip}]" in out, out  # the source is kept

    # The ClusterIP spreads over every replica, from any node.
    node1 = c.agents[NODES[0]].netns
    seen = c.answers(node1, f"http://{cluster_ip}/", 60)
    assert set(seen) == set(pods), seen

    # A pod made unready leaves the rotation, and comes back.
    victim = next(iter(pods))
    (c.shared / f"unready-{victim}").touch()
    wait_for(f"{victim} out of the endpoints", lambda: victim not in c.ready_endpoints(),
             logs=c.logs)
    time.sleep(1.0)  # the agents' promise: rules follow an endpoint change within a second
    seen = c.answers(node1, f"http://{cluster_ip}/", 30)
    assert victim not in seen and None not in seen, seen
    (c.shared / f"unready-{victim}").unlink()
    wait_for(f"{victim} back in the endpoints", lambda: victim in c.ready_endpoints(),
             logs=c.logs)
    time.sleep(1.0)
    seen = c.answers(node1, f"http://{cluster_ip}/", 60)
    assert victim in seen, seen

    # LoadBalancer: a NodePort on every node's address, the addresses reported as its
    # ingress; it answers a client outside the nodes.
    ingress = wait_for("the load balancer's ingress", lambda: (
        ips if len(ips := [i.ip for i in c.get("Service", "echo").service.status.load_balancer
                           .ingress]) == 3 else None), logs=c.logs)
    assert sorted(ingress) == sorted(agent.ip for agent in c.agents.values())
    for name, agent in c.agents.items():
        answer = c.wget(wire.netns, f"http://{agent.ip}:{node_port}/")
        assert answer in pods, f"NodePort on {name} ({agent.ip}): {answer!r}"
    assert OUTSIDE.ip not in {agent.ip for agent in c.agents.values()}

    # No ready endpoints: refused at once rather than left to time out.
    nobody = c.get("Service", "nobody").service.spec.cluster_ip
    began = time.monotonic()
    assert c.wget(node1, f"http://{nobody}/") is None
    assert time.monotonic() - began < 1.5, "a Service without endpoints must refuse"

    # A node lost: its endpoints move to the others and the Service keeps answering.
    lost = NODES[2]
    c.agents[lost].kill(signal.SIGKILL)
    moved = wait_for("the endpoints off the lost node", lambda: spread(avoid=lost),
                     timeout=60, logs=c.logs)
    time.sleep(1.0)
    seen = c.answers(node1, f"http://{cluster_ip}/", 30)
    assert None not in seen and set(seen) <= set(moved), seen
