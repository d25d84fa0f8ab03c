"""client.api against a real in-process scheduler with hollow nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import client
from client.api import Client, ClientError, NotFound, Unreachable, kind_info, ref, wrap
from proto.podium.v1 import apps_pb2, cluster_pb2, meta_pb2, pod_pb2
from tests.support.cluster import HollowNode, running_scheduler
from tests.support.cluster import client as raw_client


@pytest.fixture
def api() -> Iterator[Client]:
    with running_scheduler() as scheduler, raw_client(scheduler.port) as stub:
        node = HollowNode(stub, "node-1")
        try:
            with Client(f"127.0.0.1:{scheduler.port}") as c:
                yield c
        finally:
            node.close()


def deployment(name: str = "web", replicas: int = 2) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = name
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="c", image="busybox:latest")
    return d


def test_public_names() -> None:
    assert sorted(client.__all__) == sorted(
        ["ApplyResult", "Client", "ClientError", "ExecResult", "NotFound", "ServerError",
         "Unreachable", "kind_info", "ref", "unwrap", "wrap"])
    for name in client.__all__:
        assert getattr(client, name) is not None


def test_kinds_as_kubectl_names_them() -> None:
    for name in ("pods", "po", "Pod", "pod"):
        assert kind_info(name).kind == "Pod"
    assert kind_info("deploy").kind == "Deployment"
    assert kind_info("deployments.apps").kind == "Deployment"
    assert kind_info("rs").field == "replica_set"
    with pytest.raises(ClientError, match='resource type "gizmos"'):
        kind_info("gizmos")


def test_ref_and_wrap() -> None:
    d = deployment()
    assert ref(d) == "deployment.apps/web"
    assert wrap(d).WhichOneof("kind") == "deployment"
    pod = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="x"))
    assert ref(cluster_pb2.Object(pod=pod)) == "pod/x"


def test_apply_get_list_scale_delete(api: Client) -> None:
    result = api.apply(deployment())
    assert result.action == "created"
    assert isinstance(result.object, apps_pb2.Deployment)
    assert api.apply(deployment()).action == "unchanged"
    got = api.get("deployments", "web")
    assert got.spec.replicas == 2
    assert [d.metadata.name for d in api.list("deploy", "default")] == ["web"]
    assert api.scale("deployment", "web", 3).spec.replicas == 3
    deleted = api.delete("deploy", "web")
    assert deleted.metadata.name == "web"
    with pytest.raises(NotFound, match=r'^Error from server \(NotFound\): deployments "web" '
                                       r"not found$"):
        api.get("deploy", "web")


def test_watch_sees_current_objects_then_changes(api: Client) -> None:
    api.apply(deployment("a"))
    events = api.watch("Deployment", "default")
    first = next(events)
    assert first.type == first.ADDED and first.object.deployment.metadata.name == "a"
    assert next(events).type == first.BOOKMARK
    api.scale("Deployment", "a", 5)
    # The controllers also change its status; the scale is one of the changes.
    for change in events:
        assert change.type == change.MODIFIED
        if change.object.deployment.spec.replicas == 5:
            break


def test_dry_run_stores_nothing(api: Client) -> None:
    assert api.create(deployment("dry"), dry_run=True).metadata.name == "dry"
    assert api.list("Deployment") == []


def test_server_down_says_so() -> None:
    with Client("127.0.0.1:1", timeout=2) as c, pytest.raises(Unreachable) as err:
        c.list("pods")
    assert str(err.value) == ("cannot reach the scheduler at 127.0.0.1:1: connection refused "
                              "— is it running? try `podium up`")


def test_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_SERVER", "unix:/nonexistent/podium.sock")
    with Client() as c:
        assert c.server == "unix:/nonexistent/podium.sock"
    monkeypatch.delenv("PODIUM_SERVER")
    with Client() as c:
        assert c.server == "127.0.0.1:7400"
