"""Kubernetes' defaults: what each kind gets, what is kept, and that twice is once."""

from __future__ import annotations

from typing import Any

import pytest

from proto import kube
from proto.podium.v1 import cluster_pb2
from scheduler.api.defaults import apply_defaults, carry_over, image_pull_policy
from scheduler.api.validation import validate


def manifest(body: dict[str, Any]) -> cluster_pb2.Object:
    return kube.to_object(kube.Document("test.yaml", 1, body, {})).object


def defaulted(body: dict[str, Any]) -> cluster_pb2.Object:
    obj = manifest(body)
    apply_defaults(obj)
    return obj


def pod_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}], **spec}}


def deployment_body(api_version: str = "apps/v1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "web", "image": "nginx",
                                              "resources": {"limits": {"cpu": "1"}}}]}},
        **spec,
    }
    return {"apiVersion": api_version, "kind": "Deployment", "metadata": {"name": "web"},
            "spec": body}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000,
                                             "targetPort": "admin", "protocol": "UDP"}]}}
SAMPLES = [
    pod_body(),
    pod_body(hostNetwork=True, containers=[{
        "name": "a", "image": "a", "ports": [{"containerPort": 80}],
        "livenessProbe": {"httpGet": {"port": 80}},
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 3},
        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "resources": {"limits": {"memory": "64Mi"}}}]),
    deployment_body(),
    deployment_body(strategy={"type": "Recreate"}, replicas=0),
    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
     "spec": deployment_body()["spec"]},
    SERVICE,
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
     "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "namespace": "x"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
    {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
     "subsets": [{"addresses": [{"ip": "10.88.0.2"}], "ports": [{"port": 80}]}]},
    {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1"},
     "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Scheduled"},
]


@pytest.mark.parametrize("body", SAMPLES, ids=lambda b: f"{b['kind']}-{b['metadata']['name']}")
def test_defaults_are_idempotent_and_valid(body: dict[str, Any]) -> None:
    once = defaulted(body)
    twice = cluster_pb2.Object()
    twice.CopyFrom(once)
    apply_defaults(twice)
    assert twice == once
    validate(once)


def test_namespace() -> None:
    assert defaulted(pod_body()).pod.metadata.namespace == "default"
    body = pod_body()
    body["metadata"]["namespace"] = "team"
    assert defaulted(body).pod.metadata.namespace == "team"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "namespace": "x"}}
    assert defaulted(node).node.metadata.namespace == ""


def test_pod_spec() -> None:
    spec = defaulted(pod_body()).pod.spec
    assert spec.restart_policy == "Always"
    assert spec.termination_grace_period_seconds == 30
    assert spec.dns_policy == "ClusterFirst"
    assert spec.containers[0].image_pull_policy == "IfNotPresent"


def test_pod_spec_keeps_what_is_set() -> None:
    spec = defaulted(pod_body(restartPolicy="Never", terminationGracePeriodSeconds=0,
                              dnsPolicy="Default")).pod.spec
    assert spec.restart_policy == "Never"
    assert spec.HasField("termination_grace_period_seconds")
    assert spec.termination_grace_period_seconds == 0
    assert spec.dns_policy == "Default"


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("localhost:5000/app", "Always"),
    ("localhost:5000/app:v1", "IfNotPresent"),
    ("localhost:5000/app:latest", "Always"),
    ("app@sha256:" + "a" * 64, "IfNotPresent"),
    ("docker.io/library/busybox:1.36", "IfNotPresent"),
])
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy
    body = pod_body(containers=[{"name": "a", "image": image}])
    assert defaulted(body).pod.spec.containers[0].image_pull_policy == policy


def test_explicit_pull_policy_kept() -> None:
    body = pod_body(containers=[{"name": "a", "image": "a", "imagePullPolicy": "Never"}])
    assert defaulted(body).pod.spec.containers[0].image_pull_policy == "Never"


def test_ports_probes_env() -> None:
    container = defaulted(SAMPLES[1]).pod.spec.containers[0]
    assert container.ports[0].protocol == "TCP"
    assert container.ports[0].host_port == 80  # hostNetwork: the node's port is the pod's
    live = container.liveness_probe
    assert (live.timeout_seconds, live.period_seconds, live.success_threshold,
            live.failure_threshold) == (1, 10, 1, 3)
    assert (live.http_get.path, live.http_get.scheme) == ("/", "HTTP")
    assert container.readiness_probe.period_seconds == 3
    assert not container.HasField("startup_probe")
    assert container.env[0].value_from.field_ref.api_version == "v1"


def test_pod_requests_default_to_limits_but_not_in_templates() -> None:
    container = defaulted(SAMPLES[1]).pod.spec.containers[0]
    assert dict(container.resources.requests) == {"memory": "64Mi"}
    template = defaulted(deployment_body()).deployment.spec.template.spec.containers[0]
    assert dict(template.resources.requests) == {}


def test_init_containers_get_defaults() -> None:
    spec = defaulted(pod_body(initContainers=[{"name": "init", "image": "busybox"}])).pod.spec
    assert spec.init_containers[0].image_pull_policy == "Always"


def test_deployment() -> None:
    spec = defaulted(deployment_body()).deployment.spec
    assert spec.HasField("replicas") and spec.replicas == 1
    assert spec.strategy.type == "RollingUpdate"
    assert spec.strategy.rolling_update.max_surge.str_value == "25%"
    assert spec.strategy.rolling_update.max_unavailable.str_value == "25%"
    assert spec.revision_history_limit == 10
    assert spec.progress_deadline_seconds == 600
    template = spec.template.spec
    assert template.restart_policy == "Always"
    assert template.containers[0].image_pull_policy == "Always"


def test_deployment_keeps_zero_replicas_and_recreate() -> None:
    spec = defaulted(SAMPLES[3]).deployment.spec
    assert spec.HasField("replicas") and spec.replicas == 0
    assert spec.strategy.type == "Recreate"
    assert not spec.strategy.HasField("rolling_update")


def test_deployment_keeps_given_rolling_update() -> None:
    body = deployment_body(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "50%"}})
    rolling = defaulted(body).deployment.spec.strategy.rolling_update
    assert rolling.max_surge.WhichOneof("value") == "int_value"
    assert rolling.max_surge.int_value == 0
    assert rolling.max_unavailable.str_value == "50%"


def test_selector_comes_from_old_api_versions_conversion_only() -> None:
    body = deployment_body()
    del body["spec"]["selector"]
    assert not defaulted(body).deployment.spec.HasField("selector")
    body["apiVersion"] = "extensions/v1beta1"
    assert dict(defaulted(body).deployment.spec.selector.match_labels) == {"app": "web"}


def test_replica_set() -> None:
    spec = defaulted(SAMPLES[4]).replica_set.spec
    assert spec.replicas == 1
    assert spec.template.spec.restart_policy == "Always"


def test_service() -> None:
    spec = defaulted(SERVICE).service.spec
    assert spec.type == "ClusterIP"
    assert spec.session_affinity == "None"
    assert spec.ports[0].protocol == "TCP"
    assert spec.ports[0].target_port.int_value == 80
    assert spec.ports[1].protocol == "UDP"
    assert spec.ports[1].target_port.str_value == "admin"
    assert spec.external_traffic_policy == ""
    assert not spec.HasField("session_affinity_config")


def test_node_port_service_with_client_ip_affinity() -> None:
    spec = defaulted(SAMPLES[6]).service.spec
    assert spec.external_traffic_policy == "Cluster"
    assert spec.session_affinity_config.client_ip.timeout_seconds == 10800


def test_endpoints_and_namespace() -> None:
    assert defaulted(SAMPLES[9]).endpoints.subsets[0].ports[0].protocol == "TCP"
    assert defaulted(SAMPLES[8]).namespace.status.phase == "Active"


# --- carry_over ------------------------------------------------------------------------


def test_carry_over_keeps_service_addresses() -> None:
    old = defaulted({**SAMPLES[6]})
    old.service.spec.cluster_ip = "10.96.0.5"
    old.service.spec.cluster_ips.append("10.96.0.5")
    old.service.spec.ports[0].node_port = 30080
    new = manifest(SAMPLES[6])
    carry_over(new, old)
    apply_defaults(new)
    assert new == old
    validate(new, old)


def test_carry_over_leaves_given_values() -> None:
    old = defaulted(SAMPLES[6])
    old.service.spec.ports[0].node_port = 30080
    body = {**SAMPLES[6], "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
                                   "ports": [{"port": 80, "nodePort": 30081},
                                             {"name": "b", "port": 81}]}}
    new = manifest(body)
    carry_over(new, old)
    assert new.service.spec.cluster_ip == "10.96.0.9"
    assert new.service.spec.ports[0].node_port == 30081
    assert new.service.spec.ports[1].node_port == 0


def test_carry_over_keeps_no_node_port_for_cluster_ip_services() -> None:
    old = defaulted(SAMPLES[6])
    old.service.spec.ports[0].node_port = 30080
    new = manifest({**SAMPLES[6], "spec": {"ports": [{"port": 80}]}})
    carry_over(new, old)
    assert new.service.spec.ports[0].node_port == 0


def test_carry_over_keeps_pod_node_and_node_cidr() -> None:
    old = defaulted(pod_body())
    old.pod.spec.node_name = "node-1"
    new = defaulted(pod_body())
    carry_over(new, old)
    assert new.pod.spec.node_name == "node-1"
    old_node = defaulted(SAMPLES[7])
    old_node.node.spec.pod_cidr = "10.88.1.0/24"
    new_node = defaulted(SAMPLES[7])
    carry_over(new_node, old_node)
    assert new_node.node.spec.pod_cidr == "10.88.1.0/24"
