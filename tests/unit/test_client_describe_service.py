"""``podium describe service|endpoints`` as prose, and ``podium apply`` writing
Services after the rest of a file so their warnings see its Deployments."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client.api import NotFound
from client.cli import main
from client.cli.describe import describe, related
from proto.podium.v1 import core_pb2, service_pb2
from tests.support.cluster import running_scheduler
from tests.support.examples import tornado


def tornado_service() -> service_pb2.Service:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = "tornado-svc", "default"
    svc.spec.type = "LoadBalancer"
    svc.spec.selector["app"] = "tornado"
    svc.spec.cluster_ip = "10.96.4.7"
    svc.spec.session_affinity = "None"
    svc.spec.external_traffic_policy = "Cluster"
    port = svc.spec.ports.add(port=80, protocol="TCP", node_port=31234)
    port.target_port.int_value = 80
    svc.status.load_balancer.ingress.add(ip="192.168.1.11")
    svc.status.load_balancer.ingress.add(ip="192.168.1.12")
    return svc


def endpoints(*ready: str, not_ready: tuple[str, ...] = ()) -> service_pb2.Endpoints:
    ep = service_pb2.Endpoints()
    ep.metadata.name, ep.metadata.namespace = "tornado-svc", "default"
    subset = ep.subsets.add()
    for ip in ready:
        subset.addresses.add(ip=ip)
    for ip in not_ready:
        subset.not_ready_addresses.add(ip=ip)
    subset.ports.add(port=80, protocol="TCP")
    return ep


def fields(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            out.setdefault(key, []).append(value.strip())
    return out


def test_describe_service_shows_addresses_ports_and_why() -> None:
    warning = core_pb2.Event(type="Warning", reason="NoTraffic", count=2,
                             message="port 80/TCP: no selected container declares port 80 "
                                     "(they declare 8888/TCP)")
    warning.last_timestamp.GetCurrentTime()
    text = describe("Service", tornado_service(),
                    [warning], endpoints=endpoints("10.88.1.2", "10.88.0.5",
                                                   not_ready=("10.88.2.9",)))
    got = fields(text)
    assert got["Type"] == ["LoadBalancer"] and got["IP"] == ["10.96.4.7"]
    assert got["Port"] == ["<unset>  80/TCP"] and got["TargetPort"] == ["80/TCP"]
    assert got["NodePort"] == ["<unset>  31234/TCP"]
    assert got["Endpoints"] == ["10.88.1.2:80,10.88.0.5:80"]  # ready ones only
    assert got["Session Affinity"] == ["None"]
    assert got["LoadBalancer Ingress"] == ["192.168.1.11, 192.168.1.12"]
    assert "NoTraffic" in text and "(x2)" in text and "declares port 80" in text


def test_describe_service_without_endpoints_says_none() -> None:
    svc = tornado_service()
    svc.spec.type = "ClusterIP"
    svc.spec.ports[0].node_port = 0
    svc.ClearField("status")
    got = fields(describe("Service", svc, [], endpoints=None))
    assert got["Endpoints"] == ["<none>"] and "NodePort" not in got
    assert "LoadBalancer Ingress" not in got
    many = endpoints(*(f"10.88.0.{i}" for i in range(1, 6)))
    got = fields(describe("Service", tornado_service(), [], endpoints=many))
    assert got["Endpoints"] == ["10.88.0.1:80,10.88.0.2:80,10.88.0.3:80 + 2 more..."]


def test_describe_endpoints_lists_subsets() -> None:
    text = describe("Endpoints", endpoints("10.88.1.2", not_ready=("10.88.2.9",)), [])
    assert re.search(r"\n  Addresses: +10\.88\.1\.2\n", text)
    assert re.search(r"\n  NotReadyAddresses: +10\.88\.2\.9\n", text)
    assert re.search(r"<unset>\s+80\s+TCP", text)


class FakeClient:
    def __init__(self, ep: service_pb2.Endpoints | None) -> None:
        self.ep = ep
        self.asked: list[tuple[str, str, str]] = []

    def get(self, kind: str, name: str, namespace: str) -> service_pb2.Endpoints:
        self.asked.append((kind, name, namespace))
        if self.ep is None:
            raise NotFound(grpc.StatusCode.NOT_FOUND, "not found")
        return self.ep


def test_related_reads_a_services_endpoints() -> None:
    ep = endpoints("10.88.1.2")
    fake = FakeClient(ep)
    assert related(fake, "Service", tornado_service()) == {"endpoints": ep}
    assert fake.asked == [("Endpoints", "tornado-svc", "default")]
    assert related(FakeClient(None), "Service", tornado_service()) == {"endpoints": None}
    assert related(fake, "Pod", tornado_service()) == {}


# --- apply ------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[str]:
    with running_scheduler() as scheduler:
        yield f"127.0.0.1:{scheduler.port}"


def test_apply_writes_services_last_and_warns_against_the_deployment(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "tornado.yaml"
    copy.write_text(re.sub(r"image: \S+", "image: podium/tornado:1", tornado()))
    assert main(["apply", "-f", str(copy), "--server", server]) == 0
    out, err = capsys.readouterr()
    # Told in file order; the Service's warning knows the Deployment's port 8888.
    assert out.splitlines() == ["service/tornado-svc created",
                                "deployment.apps/tornado-deploy created"]
    assert err.splitlines() == [
        "Warning: port 80/TCP: no selected container declares port 80 (they declare "
        "8888/TCP); connections will be refused unless something listens there"]
