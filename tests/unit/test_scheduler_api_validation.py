"""Validation of each kind: the fields Kubernetes checks, named in its JSON form."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import kube
from proto.podium.v1 import cluster_pb2
from scheduler.api.defaults import apply_defaults
from scheduler.api.validation import FieldError, Invalid, validate


def manifest(body: dict[str, Any]) -> cluster_pb2.Object:
    obj = kube.to_object(kube.Document("test.yaml", 1, body, {})).object
    apply_defaults(obj)
    return obj


def errors(body: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Every error, as "<field>: <message>"; [] when valid."""
    try:
        validate(manifest(body), manifest(old) if old is not None else None)
    except Invalid as e:
        return [str(error) for error in e.errors]
    return []


def fields(body: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [error.split(": ", 1)[0] for error in errors(body, old)]


def warnings(body: dict[str, Any]) -> list[str]:
    return validate(manifest(body))


POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{
            "name": "web", "image": "nginx:1.25",
            "ports": [{"name": "http", "containerPort": 80}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "livenessProbe": {"httpGet": {"port": "http"}},
            "env": [{"name": "MODE", "value": "prod"}],
        }],
    },
}


def pod(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(POD)
    body["spec"].update(spec)
    return body


def container(**fields: Any) -> dict[str, Any]:
    """The pod with its container changed."""
    body = copy.deepcopy(POD)
    body["spec"]["containers"][0].update(fields)
    return body


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                     "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
    },
}


def deployment(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(DEPLOYMENT)
    body["spec"].update(spec)
    return body


SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}


def service(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(SERVICE)
    body["spec"].update(spec)
    return body


def test_valid_objects() -> None:
    assert errors(POD) == []
    assert warnings(POD) == []
    assert errors(DEPLOYMENT) == []
    assert errors(SERVICE) == []


def test_invalid_lists_every_error_first_as_field() -> None:
    body = container(name="Web", image="")
    with pytest.raises(Invalid) as info:
        validate(manifest(body))
    error = info.value
    assert isinstance(error, ValueError)
    assert error.field == "spec.containers[0].name"
    assert error.errors[1] == FieldError("spec.containers[0].image", "required")
    assert str(error).startswith("spec.containers[0].name: ")
    assert "; spec.containers[0].image: required" in str(error)


def test_invalid_of_one_error() -> None:
    error = Invalid("spec.replicas", "must be at least 0")
    assert str(error) == "spec.replicas: must be at least 0"
    assert error.errors == (FieldError("spec.replicas", "must be at least 0"),)


def test_object_without_kind() -> None:
    with pytest.raises(Invalid, match="^kind: "):
        validate(cluster_pb2.Object())


# --- metadata --------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "ok"), [
    ("Pod", "web-1", True),
    ("Pod", "web.example", True),
    ("Pod", "Web", False),
    ("Pod", "web_1", False),
    ("Pod", "-web", False),
    ("Pod", "a" * 253, True),
    ("Pod", "a" * 254, False),
    ("Service", "web", True),
    ("Service", "web.example", False),
    ("Service", "a" * 64, False),
    ("Namespace", "team-a", True),
    ("Namespace", "team.a", False),
    ("Node", "node-1.example.com", True),
    ("Node", "Node_1", False),
    ("Deployment", "web.v2", True),
])
def test_names(kind: str, name: str, ok: bool) -> None:
    api = "apps/v1" if kind == "Deployment" else "v1"
    body: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name}}
    if kind == "Pod":
        body["spec"] = POD["spec"]
    elif kind == "Service":
        body["spec"] = SERVICE["spec"]
    elif kind == "Deployment":
        body["spec"] = DEPLOYMENT["spec"]
    assert (fields(body) == []) is ok
    if not ok:
        assert fields(body) == ["metadata.name"]


def test_name_required_unless_generated() -> None:
    body = copy.deepcopy(POD)
    body["metadata"] = {}
    assert errors(body) == ["metadata.name: required (or generateName)"]
    body["metadata"] = {"generateName": "web-"}
    assert errors(body) == []
    body["metadata"] = {"generateName": "Web-"}
    assert fields(body) == ["metadata.generateName"]


def test_namespace() -> None:
    body = copy.deepcopy(POD)
    body["metadata"]["namespace"] = "Team"
    assert fields(body) == ["metadata.namespace"]
    node = cluster_pb2.Object()
    node.node.metadata.name, node.node.metadata.namespace = "n", "default"
    with pytest.raises(Invalid, match="metadata.namespace: not allowed: Node is cluster-scoped"):
        validate(node)


@pytest.mark.parametrize(("labels", "field"), [
    ({"app": "web"}, None),
    ({"example.com/app": "web"}, None),
    ({"app": ""}, None),
    ({"-app": "web"}, "metadata.labels"),
    ({"Example.com/app": "web"}, "metadata.labels"),
    ({"a/b/c": "web"}, "metadata.labels"),
    ({"app": "web site"}, "metadata.labels[app]"),
    ({"app": "x" * 64}, "metadata.labels[app]"),
])
def test_labels(labels: dict[str, str], field: str | None) -> None:
    body = copy.deepcopy(POD)
    body["metadata"]["labels"] = labels
    assert fields(body) == ([field] if field else [])


def test_annotations() -> None:
    body = copy.deepcopy(POD)
    body["metadata"]["annotations"] = {"note": "x" * 200_000, "more": "y" * 100_000}
    assert errors(body) == ["metadata.annotations: 300008 bytes in all, more than 262144"]
    body["metadata"]["annotations"] = {"bad key": "x"}
    assert fields(body) == ["metadata.annotations"]


def test_owner_references() -> None:
    body = copy.deepcopy(POD)
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u",
           "controller": True}
    body["metadata"]["ownerReferences"] = [ref, {**ref, "uid": ""}]
    assert errors(body) == ["metadata.ownerReferences[1].uid: required",
                            "metadata.ownerReferences: only one reference may have "
                            "controller true"]


# --- pods ------------------------------------------------------------------------------


def test_pod_needs_a_container() -> None:
    assert errors(pod(containers=[])) == [
        "spec.containers: required: a pod needs at least one container"]


def test_container_names_unique_across_init_and_app() -> None:
    body = pod(initContainers=[{"name": "web", "image": "busybox"}])
    assert errors(body) == ['spec.containers[0].name: "web" is the name of another container']


@pytest.mark.parametrize(("name", "ok"), [("web", True), ("Web", False), ("web.1", False),
                                          ("a" * 64, False), ("", False)])
def test_container_name(name: str, ok: bool) -> None:
    assert (fields(container(name=name)) == []) is ok


def test_image_required() -> None:
    assert errors(container(image="")) == ["spec.containers[0].image: required"]
    assert fields(container(image=" nginx")) == ["spec.containers[0].image"]


@pytest.mark.parametrize(("port", "field"), [
    ({"containerPort": 80}, None),
    ({"containerPort": 0}, "containerPort"),
    ({"containerPort": 65536}, "containerPort"),
    ({"containerPort": 80, "hostPort": 70000}, "hostPort"),
    ({"containerPort": 80, "protocol": "HTTP"}, "protocol"),
    ({"containerPort": 80, "protocol": "SCTP"}, None),
    ({"containerPort": 80, "name": "web-http"}, None),
    ({"containerPort": 80, "name": "HTTP"}, "name"),
    ({"containerPort": 80, "name": "8080"}, "name"),
    ({"containerPort": 80, "name": "a--b"}, "name"),
    ({"containerPort": 80, "name": "-ab"}, "name"),
    ({"containerPort": 80, "name": "abcdefghijklmnop"}, "name"),
    ({"containerPort": 80, "hostIP": "1.2.3"}, "hostIP"),
])
def test_container_ports(port: dict[str, Any], field: str | None) -> None:
    body = container(ports=[port], livenessProbe={"tcpSocket": {"port": 80}})
    assert fields(body) == ([f"spec.containers[0].ports[0].{field}"] if field else [])


def test_port_names_unique_in_a_container() -> None:
    body = container(ports=[{"name": "http", "containerPort": 80},
                            {"name": "http", "containerPort": 81}])
    assert errors(body) == ['spec.containers[0].ports[1].name: "http" is the name of '
                            "another port"]


def test_host_port_clashes() -> None:
    second: dict[str, Any] = {"name": "b", "image": "b",
                              "ports": [{"containerPort": 81, "hostPort": 8080}]}
    first = {"name": "a", "image": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}
    assert errors(pod(containers=[first, second], volumes=[])) == [
        "spec.containers[1].ports[0].hostPort: 8080/TCP is also "
        "spec.containers[0].ports[0].hostPort"]
    second["ports"][0]["protocol"] = "UDP"
    assert errors(pod(containers=[first, second], volumes=[])) == []


def test_host_network_host_port_must_be_container_port() -> None:
    c = {"name": "a", "image": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}
    assert fields(pod(containers=[c], volumes=[], hostNetwork=True)) == [
        "spec.containers[0].ports[0].hostPort"]


@pytest.mark.parametrize(("resources", "field", "message"), [
    ({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, "requests[cpu]", "more than the limit"),
    ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}, "requests[memory]", "more"),
    ({"requests": {"cpu": "500m"}, "limits": {"cpu": "0.5"}}, None, ""),
    ({"requests": {"gpu": "1"}}, "requests[gpu]", "not a resource podium knows"),
    ({"requests": {"cpu": "-1"}}, "requests[cpu]", "must not be negative"),
])
def test_resources(resources: dict[str, Any], field: str | None, message: str) -> None:
    result = errors(container(resources=resources))
    if field is None:
        assert result == []
    else:
        assert len(result) == 1
        assert result[0].startswith(f"spec.containers[0].resources.{field}: ")
        assert message in result[0]


def test_pod_requests_default_to_limits_and_are_checked_too() -> None:
    assert fields(container(resources={"limits": {"cpu": "-1"}})) == [
        "spec.containers[0].resources.limits[cpu]", "spec.containers[0].resources.requests[cpu]"]


def test_fractional_memory_is_a_warning() -> None:
    assert warnings(container(resources={"requests": {"memory": "1.5"}})) == [
        'spec.containers[0].resources.requests[memory]: "1.5" is a fractional number of bytes; '
        "rounded up"]


def test_volumes() -> None:
    body = pod(volumes=[{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}},
                        {"name": "Bad", "hostPath": {"path": "relative"}}])
    assert fields(body) == ["spec.volumes[1].name", "spec.volumes[2].name",
                            "spec.volumes[2].hostPath.path"]


def test_volume_needs_a_source() -> None:
    body = pod(volumes=[{"name": "data"}])
    assert errors(body) == ["spec.volumes[0]: needs exactly one source (emptyDir or hostPath)"]


def test_volume_sources() -> None:
    body = pod(volumes=[{"name": "data", "emptyDir": {"medium": "Disk"}},
                        {"name": "h", "hostPath": {"path": "/x", "type": "Pipe"}}])
    assert fields(body) == ["spec.volumes[0].emptyDir.medium", "spec.volumes[1].hostPath.type"]


def test_empty_dir_size_limit_on_disk_is_a_warning() -> None:
    body = pod(volumes=[{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}])
    assert warnings(body) == ["spec.volumes[0].emptyDir.sizeLimit: enforced only for medium "
                              "Memory; ignored on the node's disk"]
    body = pod(volumes=[{"name": "data", "emptyDir": {"sizeLimit": "1Gi", "medium": "Memory"}}])
    assert warnings(body) == []


def test_volume_mounts() -> None:
    body = container(volumeMounts=[{"name": "nope", "mountPath": "/a"},
                                   {"name": "data", "mountPath": "rel"},
                                   {"name": "data", "mountPath": "/a"},
                                   {"name": "data", "mountPath": "/b", "subPath": "../x"}])
    assert errors(body) == [
        'spec.containers[0].volumeMounts[0].name: "nope" is not the name of a volume in the pod',
        'spec.containers[0].volumeMounts[1].mountPath: "rel" is not an absolute path',
        'spec.containers[0].volumeMounts[2].mountPath: "/a" is mounted twice',
        'spec.containers[0].volumeMounts[3].subPath: "../x" must be relative, without ".."',
    ]


@pytest.mark.parametrize(("policy", "ok"), [("Always", True), ("OnFailure", True),
                                            ("Never", True), ("Sometimes", False)])
def test_restart_policy(policy: str, ok: bool) -> None:
    assert (errors(pod(restartPolicy=policy)) == []) is ok


def test_grace_period() -> None:
    assert errors(pod(terminationGracePeriodSeconds=0)) == []
    assert errors(pod(terminationGracePeriodSeconds=-1)) == [
        "spec.terminationGracePeriodSeconds: -1 must be at least 0"]


@pytest.mark.parametrize(("probe", "field"), [
    ({"exec": {"command": ["true"]}}, None),
    ({"tcpSocket": {"port": 80}}, None),
    ({"httpGet": {"port": 0}}, "httpGet.port"),
    ({"httpGet": {"port": "HTTP"}}, "httpGet.port"),
    ({"httpGet": {"port": 80, "scheme": "FTP"}}, "httpGet.scheme"),
    ({"exec": {"command": []}}, "exec.command"),
    ({"periodSeconds": 5}, ""),
    ({"tcpSocket": {"port": 80}, "initialDelaySeconds": -1}, "initialDelaySeconds"),
    ({"tcpSocket": {"port": 80}, "failureThreshold": -3}, "failureThreshold"),
    ({"tcpSocket": {"port": 80}, "successThreshold": 2}, "successThreshold"),
    ({"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 0},
     "terminationGracePeriodSeconds"),
])
def test_liveness_probe(probe: dict[str, Any], field: str | None) -> None:
    result = fields(container(livenessProbe=probe))
    if field is None:
        assert result == []
    else:
        assert result == [f"spec.containers[0].livenessProbe{'.' + field if field else ''}"]


def test_readiness_may_need_several_successes() -> None:
    assert errors(container(readinessProbe={"tcpSocket": {"port": 80},
                                            "successThreshold": 2})) == []


def test_init_containers_have_no_probes() -> None:
    init = {"name": "init", "image": "busybox", "livenessProbe": {"exec": {"command": ["x"]}}}
    assert errors(pod(initContainers=[init])) == [
        "spec.initContainers[0].livenessProbe: not allowed for init containers"]


@pytest.mark.parametrize(("env", "field"), [
    ({"name": "A_B.c-d", "value": "1"}, None),
    ({"name": "1A", "value": "1"}, "name"),
    ({"name": "A B", "value": "1"}, "name"),
    ({"name": "", "value": "1"}, "name"),
    ({"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
     "valueFrom"),
    ({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}, None),
    ({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.volumes"}}},
     "valueFrom.fieldRef.fieldPath"),
    ({"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, None),
    ({"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}},
     "valueFrom.resourceFieldRef.resource"),
])
def test_env(env: dict[str, Any], field: str | None) -> None:
    result = fields(container(env=[env]))
    assert result == ([f"spec.containers[0].env[0].{field}"] if field else [])


def test_pod_spec_odds_and_ends() -> None:
    body = pod(dnsPolicy="Cluster", nodeSelector={"disk type": "ssd"}, hostname="Web",
               subdomain="a.b", hostAliases=[{"ip": "x", "hostnames": ["a"]}],
               securityContext={"runAsUser": -1})
    assert fields(body) == ["spec.dnsPolicy", "spec.nodeSelector", "spec.hostname",
                            "spec.subdomain", "spec.hostAliases[0].ip",
                            "spec.securityContext.runAsUser"]


def test_dns_policy_none_needs_nameservers() -> None:
    assert fields(pod(dnsPolicy="None")) == ["spec.dnsConfig.nameservers"]
    assert errors(pod(dnsPolicy="None", dnsConfig={"nameservers": ["10.0.0.1"]})) == []


@pytest.mark.parametrize(("toleration", "field"), [
    ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, None),
    ({"operator": "Exists"}, None),
    ({"key": "gpu", "value": "yes"}, None),
    ({"key": "gpu", "operator": "Exists", "value": "yes"}, "value"),
    ({"value": "yes"}, "operator"),
    ({"key": "gpu", "operator": "In"}, "operator"),
    ({"key": "gpu", "effect": "Sometimes"}, "effect"),
    ({"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}, "tolerationSeconds"),
    ({"key": "gpu", "effect": "NoExecute", "tolerationSeconds": 5}, None),
])
def test_tolerations(toleration: dict[str, Any], field: str | None) -> None:
    result = fields(pod(tolerations=[toleration]))
    assert result == ([f"spec.tolerations[0].{field}"] if field else [])


# --- Deployments and ReplicaSets -------------------------------------------------------


def test_replicas() -> None:
    assert errors(deployment(replicas=0)) == []
    assert errors(deployment(replicas=-1)) == ["spec.replicas: -1 must be at least 0"]


def test_selector_required() -> None:
    assert fields(deployment(selector={})) == ["spec.selector"]


def test_selector_must_match_template_labels() -> None:
    assert errors(deployment(selector={"matchLabels": {"app": "db"}})) == [
        'spec.template.metadata.labels: selector does not match template labels '
        '(selector "app=db")']
    expressions = {"matchExpressions": [{"key": "tier", "operator": "In",
                                         "values": ["front", "back"]}]}
    assert errors(deployment(selector=expressions)) == []


def test_bad_selector() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "Has"}]}
    assert fields(deployment(selector=selector)) == ["spec.selector"]


def test_template_is_a_pod_spec_that_always_restarts() -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    body["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert errors(body) == [
        "spec.template.spec.containers[0].image: required",
        'spec.template.spec.restartPolicy: "Never" is not allowed: only Always']


@pytest.mark.parametrize(("strategy", "field"), [
    ({"type": "Recreate"}, None),
    ({"type": "BlueGreen"}, "type"),
    ({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}, "rollingUpdate"),
    ({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, None),
    ({"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "0%"}}, None),
    ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, "rollingUpdate.maxUnavailable"),
    ({"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}}, "rollingUpdate.maxUnavailable"),
    ({"rollingUpdate": {"maxSurge": -1}}, "rollingUpdate.maxSurge"),
    ({"rollingUpdate": {"maxSurge": "half"}}, "rollingUpdate.maxSurge"),
    ({"rollingUpdate": {"maxSurge": "-5%"}}, "rollingUpdate.maxSurge"),
    ({"rollingUpdate": {"maxUnavailable": "150%"}}, "rollingUpdate.maxUnavailable"),
])
def test_strategy(strategy: dict[str, Any], field: str | None) -> None:
    result = fields(deployment(strategy=strategy))
    assert result == ([f"spec.strategy.{field}"] if field else [])


def test_deployment_counts() -> None:
    assert fields(deployment(revisionHistoryLimit=-1)) == ["spec.revisionHistoryLimit"]
    assert fields(deployment(minReadySeconds=-1)) == ["spec.minReadySeconds"]
    assert fields(deployment(minReadySeconds=700)) == ["spec.progressDeadlineSeconds"]


def test_replica_set() -> None:
    body = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
            "spec": copy.deepcopy(DEPLOYMENT["spec"])}
    assert errors(body) == []
    body["spec"]["selector"] = {"matchLabels": {"app": "x"}}
    body["spec"]["replicas"] = -2
    assert fields(body) == ["spec.replicas", "spec.template.metadata.labels"]


# --- Services --------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "field"), [
    ({"ports": []}, "spec.ports"),
    ({"ports": [], "clusterIP": "None"}, None),
    ({"ports": [{"port": 0, "targetPort": 80}]}, "spec.ports[0].port"),
    ({"ports": [{"port": 80, "protocol": "HTTP"}]}, "spec.ports[0].protocol"),
    ({"ports": [{"port": 80}, {"name": "b", "port": 81}]}, "spec.ports[0].name"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "spec.ports[1].name"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}, "spec.ports[1].port"),
    ({"ports": [{"name": "a", "port": 80},
                {"name": "b", "port": 80, "protocol": "UDP"}]}, None),
    ({"ports": [{"name": "Web", "port": 80}]}, "spec.ports[0].name"),
    ({"ports": [{"port": 80, "targetPort": 0}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"port": 80, "targetPort": "Http"}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"port": 80, "targetPort": 8080}]}, None),
    ({"ports": [{"port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort"),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}, None),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}, "spec.ports[0].nodePort"),
    ({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080},
                                    {"name": "b", "port": 81, "nodePort": 30080}]},
     "spec.ports[1].nodePort"),
    ({"type": "LoadBalancer"}, None),
    ({"type": "Ingress"}, "spec.type"),
    ({"type": "ExternalName"}, "spec.type"),
    ({"clusterIP": "10.96.0.20"}, None),
    ({"clusterIP": "10.96.0"}, "spec.clusterIP"),
    ({"clusterIP": "fd00::1"}, "spec.clusterIP"),
    ({"type": "NodePort", "clusterIP": "None"}, "spec.clusterIP"),
    ({"sessionAffinity": "Cookie"}, "spec.sessionAffinity"),
    ({"sessionAffinity": "ClientIP",
      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
    ({"externalTrafficPolicy": "Local"}, "spec.externalTrafficPolicy"),
    ({"type": "NodePort", "externalTrafficPolicy": "Local"}, None),
    ({"externalIPs": ["1.2.3.4", "nope"]}, "spec.externalIPs[1]"),
    ({"selector": {"app": "web!"}}, "spec.selector[app]"),
])
def test_service(spec: dict[str, Any], field: str | None) -> None:
    assert fields(service(**spec)) == ([field] if field else [])


def test_service_load_balancer_ip_is_a_warning() -> None:
    result = warnings(service(type="LoadBalancer", loadBalancerIP="192.0.2.1"))
    assert result == ["spec.loadBalancerIP: ignored: podium's load balancer ingress is the "
                      "nodes' own addresses"]


def test_service_local_traffic_policy_is_a_warning() -> None:
    (result,) = warnings(service(type="NodePort", externalTrafficPolicy="Local"))
    assert result.startswith("spec.externalTrafficPolicy: Local is served as Cluster")


# --- other kinds -----------------------------------------------------------------------


def node(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "spec": spec}


@pytest.mark.parametrize(("spec", "field"), [
    ({}, None),
    ({"podCIDR": "10.88.1.0/24"}, None),
    ({"podCIDR": "10.88.1.0/33"}, "spec.podCIDR"),
    ({"podCIDR": "10.88.1.1/24"}, "spec.podCIDR"),
    ({"podCIDR": "10.88.1.0/24", "podCIDRs": ["10.88.2.0/24"]}, "spec.podCIDRs[0]"),
    ({"taints": [{"key": "gpu", "effect": "NoSchedule"}]}, None),
    ({"taints": [{"key": "gpu"}]}, "spec.taints[0].effect"),
    ({"taints": [{"key": "gpu", "effect": "Never"}]}, "spec.taints[0].effect"),
    ({"taints": [{"effect": "NoSchedule"}]}, "spec.taints[0].key"),
])
def test_node(spec: dict[str, Any], field: str | None) -> None:
    assert fields(node(**spec)) == ([field] if field else [])


def test_node_status_quantities() -> None:
    body = node()
    body["status"] = {"capacity": {"cpu": "4", "memory": "8Gi"}}
    assert errors(body) == []
    obj = manifest(body)
    obj.node.status.allocatable["cpu"] = "lots"
    with pytest.raises(Invalid, match=r"status.allocatable\[cpu\]"):
        validate(obj)


def test_namespace_kind() -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    assert errors(body) == []


def event(**fields_: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.17a"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "type": "Normal", **fields_}


def test_event() -> None:
    assert errors(event()) == []
    assert fields(event(involvedObject={})) == ["involvedObject.kind", "involvedObject.name"]
    assert fields(event(type="Info")) == ["type"]
    other = {"kind": "Pod", "name": "web", "namespace": "team"}
    assert fields(event(involvedObject=other)) == ["involvedObject.namespace"]
    # Events about cluster-scoped objects live in a namespace of their own choosing.
    assert errors(event(involvedObject={"kind": "Node", "name": "n", "namespace": "x"})) == []


def endpoints(*subsets: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
            "subsets": list(subsets)}


def test_endpoints() -> None:
    good = {"addresses": [{"ip": "10.88.0.2", "nodeName": "node-1"}],
            "notReadyAddresses": [{"ip": "10.88.0.3"}], "ports": [{"port": 80}]}
    assert errors(endpoints(good)) == []
    bad = {"addresses": [{"ip": "10.88.0"}], "notReadyAddresses": [{"ip": "x"}],
           "ports": [{"port": 0}, {"name": "b", "port": 81, "protocol": "ICMP"}]}
    assert fields(endpoints(good, bad)) == [
        "subsets[1].addresses[0].ip", "subsets[1].notReadyAddresses[0].ip",
        "subsets[1].ports[0].name", "subsets[1].ports[0].port", "subsets[1].ports[1].protocol"]


# --- updates ---------------------------------------------------------------------------


def test_pod_image_may_change() -> None:
    assert errors(container(image="nginx:1.26"), POD) == []
    # and with it the pull policy its tag defaults to
    assert errors(container(image="nginx:latest"), POD) == []


def test_pod_spec_is_otherwise_immutable() -> None:
    changed = container(ports=[{"name": "http", "containerPort": 8080}])
    result = errors(changed, POD)
    assert result == ["spec: field is immutable: spec.containers[0].ports[0].containerPort "
                      "changed; a pod may change only its containers' images and add "
                      "tolerations"]
    assert fields(pod(restartPolicy="Never"), POD) == ["spec"]


def test_pod_tolerations_may_only_be_added() -> None:
    one = pod(tolerations=[{"key": "a", "operator": "Exists"}])
    two = pod(tolerations=[{"key": "a", "operator": "Exists"}, {"key": "b", "value": "x"}])
    assert errors(one, POD) == []
    assert errors(two, one) == []
    assert fields(one, two) == ["spec.tolerations"]


def test_pod_node_is_set_once() -> None:
    bound = pod(nodeName="node-1")
    assert errors(bound, POD) == []
    assert fields(pod(nodeName="node-2"), bound) == ["spec.nodeName"]
    assert fields(POD, bound) == ["spec.nodeName"]  # unless defaults.carry_over kept it


def test_name_and_namespace_are_immutable() -> None:
    renamed = copy.deepcopy(POD)
    renamed["metadata"]["name"] = "other"
    assert fields(renamed, POD) == ["metadata.name"]
    moved = copy.deepcopy(POD)
    moved["metadata"]["namespace"] = "team"
    assert fields(moved, POD) == ["metadata.namespace"]
    assert fields(SERVICE, POD) == ["kind"]


def test_labels_may_change() -> None:
    relabelled = copy.deepcopy(POD)
    relabelled["metadata"]["labels"] = {"app": "web", "new": "x"}
    assert errors(relabelled, POD) == []


def test_deployment_selector_is_immutable() -> None:
    changed = deployment(selector={"matchLabels": {"tier": "front"}})
    assert errors(changed, DEPLOYMENT) == ["spec.selector: field is immutable"]
    assert errors(deployment(replicas=5), DEPLOYMENT) == []


def test_service_cluster_ip_is_immutable_once_set() -> None:
    allocated = service(clusterIP="10.96.0.5")
    assert errors(allocated, SERVICE) == []
    # Unset is a change too, unless defaults.carry_over kept the old address.
    assert fields(SERVICE, allocated) == ["spec.clusterIP"]
    assert fields(service(clusterIP="10.96.0.6"), allocated) == ["spec.clusterIP"]


def test_node_pod_cidr_is_set_once() -> None:
    assigned = node(podCIDR="10.88.1.0/24")
    assert errors(assigned, node()) == []
    assert fields(node(podCIDR="10.88.2.0/24"), assigned) == ["spec.podCIDR"]


# --- robustness ------------------------------------------------------------------------

_text = st.text(max_size=20)


@given(name=_text, image=_text, port=st.integers(-(2**31), 2**31 - 1), port_name=_text,
       cpu=_text, env=_text, label=_text)
def test_never_crashes_on_odd_values(name: str, image: str, port: int, port_name: str,
                                     cpu: str, env: str, label: str) -> None:
    obj = manifest(POD)
    c = obj.pod.spec.containers[0]
    c.name, c.image, c.ports[0].container_port, c.ports[0].name = name, image, port, port_name
    c.resources.requests["cpu"] = cpu
    c.env[0].name = env
    obj.pod.metadata.labels[label] = label
    try:
        validate(obj, manifest(POD))
    except Invalid as e:
        assert all(error.field and error.message for error in e.errors)


def test_fields_podium_does_not_know_are_refused_by_path() -> None:
    from proto.podium.v1 import cluster_pb2 as cpb
    from proto.podium.v1 import pod_pb2 as ppb

    p = ppb.Pod()
    p.metadata.name = "web"
    p.metadata.namespace = "default"
    p.spec.containers.add(name="main", image="busybox:1.36")
    container = ppb.Container.FromString(
        p.spec.containers[0].SerializeToString() + b"\xa8\x06\x01")  # field 101 = 1
    p.spec.containers[0].CopyFrom(container)
    obj = cpb.Object()
    obj.pod.CopyFrom(p)
    with pytest.raises(Invalid) as caught:
        validate(obj)
    assert caught.value.field == "spec.containers[0]"
    assert "unknown field number(s) 101" in str(caught.value)
