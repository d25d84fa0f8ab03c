"""The API objects in proto/podium/v1: generated modules match the .proto
files, and Kubernetes manifests parse through protobuf's JSON mapping.

Where Kubernetes' JSON does not fit protobuf (a value that is a number or a
string: ports, maxSurge; the apiVersion/kind envelope), the client's manifest
conversion rewrites it; ``_to_protobuf_json`` below is the smallest version of
that rewrite, here only so the tests can feed real manifests through.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from proto import generate
from proto.podium.v1 import apps_pb2, cluster_pb2, meta_pb2, pod_pb2, service_pb2
from tests.support.examples import TORNADO

V1 = generate.REPO_ROOT / generate.PROTO_DIR
INT_OR_STRING = meta_pb2.IntOrString.DESCRIPTOR.full_name


def _to_protobuf_json(value: Any, descriptor: Descriptor) -> Any:
    """Wrap bare numbers and strings in int-or-string fields as IntOrString."""
    if not isinstance(value, dict):
        return value
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key)
        if field is None or field.type != FieldDescriptor.TYPE_MESSAGE:
            out[key] = item
            continue
        message = _message_type(field)
        if message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(item, dict):
                value_type = _message_type(value_field)
                out[key] = {k: _to_protobuf_json(v, value_type) for k, v in item.items()}
            else:
                out[key] = item
        elif isinstance(item, list):
            out[key] = [_convert_one(v, message) for v in item]
        else:
            out[key] = _convert_one(item, message)
    return out


def _message_type(field: FieldDescriptor) -> Descriptor:
    message = field.message_type
    assert message is not None, field.full_name
    return message


def _convert_one(item: Any, message: Descriptor) -> Any:
    if message.full_name == INT_OR_STRING and isinstance(item, (int, str)):
        return {"intValue": item} if isinstance(item, int) else {"strValue": item}
    return _to_protobuf_json(item, message)


def _parse(manifest: dict[str, Any], message: Message) -> Any:
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    return json_format.ParseDict(_to_protobuf_json(body, descriptor), message)


# --- generated code -------------------------------------------------------


def test_generated_modules_match_the_proto_files(tmp_path: Path) -> None:
    fresh_dir = tmp_path / generate.PROTO_DIR
    fresh = {p.name: p.read_bytes() for p in generate.generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in generate.generated_files(V1)}
    assert sorted(committed) == sorted(fresh), (
        "generated modules missing or stale in proto/podium/v1: run `python -m proto.generate`"
    )
    differ = [name for name in fresh if committed[name] != fresh[name]]
    assert not differ, (
        f"{', '.join(differ)} differ from what the .proto files make (in {fresh_dir}): "
        "do not edit generated code; change the .proto and run `python -m proto.generate`"
    )


def test_every_proto_has_its_modules() -> None:
    for proto in generate.proto_files():
        stem = proto.stem
        for suffix in generate.GENERATED_SUFFIXES:
            assert (V1 / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
        importlib.import_module(f"proto.podium.v1.{stem}_pb2")
        importlib.import_module(f"proto.podium.v1.{stem}_pb2_grpc")


# --- manifests ------------------------------------------------------------

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: front}
  annotations: {note: hello}
  creationTimestamp: null
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4, uid: u-1, controller: true}
spec:
  restartPolicy: OnFailure
  nodeName: node-1
  nodeSelector: {disk: ssd}
  hostNetwork: false
  hostname: web-0
  terminationGracePeriodSeconds: 0
  securityContext: {runAsUser: 0, fsGroup: 2000}
  tolerations:
  - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute,
     tolerationSeconds: 5}
  volumes:
  - name: scratch
    emptyDir: {}
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  - name: logs
    hostPath: {path: /var/log/web, type: DirectoryOrCreate}
  initContainers:
  - name: init
    image: busybox:1.36
    command: [sh, -c, "echo ready > /work/flag"]
    volumeMounts: [{name: scratch, mountPath: /work}]
  containers:
  - name: app
    image: registry.example/web:2.1
    imagePullPolicy: IfNotPresent
    command: [/bin/web]
    args: [--port, "8080"]
    workingDir: /srv
    tty: true
    stdin: true
    env:
    - {name: MODE, value: prod}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
    - {containerPort: 9090, hostPort: 19090, hostIP: 0.0.0.0, protocol: UDP}
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: "1", memory: 128Mi}
    volumeMounts:
    - {name: scratch, mountPath: /work}
    - {name: logs, mountPath: /logs, readOnly: true, subPath: app}
    livenessProbe:
      httpGet: {path: /healthz, port: 8080, scheme: HTTP,
                httpHeaders: [{name: X-Probe, value: "1"}]}
      initialDelaySeconds: 3
      periodSeconds: 5
      timeoutSeconds: 2
      failureThreshold: 4
    readinessProbe:
      tcpSocket: {port: http}
      successThreshold: 2
    startupProbe:
      exec: {command: [cat, /work/flag]}
    securityContext:
      readOnlyRootFilesystem: true
      capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
status:
  phase: Running
  podIP: 10.88.1.7
  podIPs: [{ip: 10.88.1.7}]
  hostIP: 192.168.56.11
  startTime: "2024-05-01T12:00:00Z"
  conditions:
  - {type: Ready, status: "True", lastTransitionTime: "2024-05-01T12:00:03Z"}
  containerStatuses:
  - name: app
    ready: true
    started: true
    restartCount: 2
    image: registry.example/web:2.1
    imageID: sha256:abc
    containerID: podium://c0ffee
    state:
      running: {startedAt: "2024-05-01T12:00:02Z"}
    lastState:
      terminated: {exitCode: 137, signal: 9, reason: OOMKilled,
                   startedAt: "2024-05-01T12:00:01Z", finishedAt: "2024-05-01T12:00:02Z"}
  initContainerStatuses:
  - name: init
    state:
      waiting: {reason: CrashLoopBackOff, message: back-off 10s}
"""


def test_pod_manifest_parses() -> None:
    pod: pod_pb2.Pod = _parse(yaml.safe_load(POD), pod_pb2.Pod())
    meta, spec, status = pod.metadata, pod.spec, pod.status
    assert (meta.name, meta.namespace, meta.labels["tier"]) == ("web", "shop", "front")
    assert not meta.HasField("creation_timestamp")
    assert meta.owner_references[0].controller
    assert spec.restart_policy == "OnFailure" and spec.node_selector == {"disk": "ssd"}
    assert spec.HasField("termination_grace_period_seconds")
    assert spec.termination_grace_period_seconds == 0
    assert spec.security_context.HasField("run_as_user") and spec.security_context.fs_group == 2000
    assert spec.tolerations[1].toleration_seconds == 5
    assert not spec.tolerations[0].HasField("toleration_seconds")
    assert [v.WhichOneof("source") for v in spec.volumes] == ["empty_dir", "empty_dir", "host_path"]
    assert spec.volumes[1].empty_dir.size_limit == "64Mi"
    assert spec.volumes[2].host_path.type == "DirectoryOrCreate"
    assert spec.init_containers[0].volume_mounts[0].mount_path == "/work"

    app = spec.containers[0]
    assert app.args == ["--port", "8080"] and app.working_dir == "/srv" and app.tty
    assert app.env[1].value_from.field_ref.field_path == "status.podIP"
    assert app.ports[1].host_port == 19090 and app.ports[1].host_ip == "0.0.0.0"
    assert app.resources.requests["cpu"] == "250m" and app.resources.limits["memory"] == "128Mi"
    assert app.volume_mounts[1].read_only and app.volume_mounts[1].sub_path == "app"
    liveness = app.liveness_probe
    assert liveness.WhichOneof("action") == "http_get"
    assert liveness.http_get.port.int_value == 8080
    assert liveness.http_get.http_headers[0].name == "X-Probe"
    assert (liveness.initial_delay_seconds, liveness.period_seconds) == (3, 5)
    assert (liveness.timeout_seconds, liveness.failure_threshold) == (2, 4)
    assert app.readiness_probe.tcp_socket.port.str_value == "http"
    assert app.startup_probe.exec.command == ["cat", "/work/flag"]
    assert app.security_context.capabilities.drop == ["ALL"]

    assert status.phase == "Running" and status.pod_ips[0].ip == status.pod_ip == "10.88.1.7"
    assert status.start_time.seconds == 1714564800
    assert status.conditions[0].status == "True"
    app_status = status.container_statuses[0]
    assert app_status.restart_count == 2 and app_status.container_id == "podium://c0ffee"
    assert app_status.state.WhichOneof("state") == "running"
    last = app_status.last_state.terminated
    assert (last.exit_code, last.signal, last.reason) == (137, 9, "OOMKilled")
    waiting = status.init_container_statuses[0].state.waiting
    assert waiting.reason == "CrashLoopBackOff"


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front, edge]}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 25%}
  minReadySeconds: 5
  revisionHistoryLimit: 3
  paused: true
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      containers:
      - name: web
        image: nginx:1.25
status:
  observedGeneration: 4
  replicas: 3
  updatedReplicas: 2
  readyReplicas: 3
  availableReplicas: 3
  unavailableReplicas: 0
  conditions:
  - {type: Available, status: "True", reason: MinimumReplicasAvailable}
"""


def test_deployment_manifest_parses() -> None:
    d: apps_pb2.Deployment = _parse(yaml.safe_load(DEPLOYMENT), apps_pb2.Deployment())
    spec = d.spec
    assert spec.HasField("replicas") and spec.replicas == 0
    assert spec.selector.match_labels == {"app": "web"}
    assert spec.selector.match_expressions[0].values == ["front", "edge"]
    assert spec.strategy.type == "RollingUpdate"
    assert spec.strategy.rolling_update.max_surge.int_value == 1
    assert spec.strategy.rolling_update.max_unavailable.str_value == "25%"
    assert (spec.min_ready_seconds, spec.revision_history_limit, spec.paused) == (5, 3, True)
    assert spec.template.spec.containers[0].image == "nginx:1.25"
    assert (d.status.observed_generation, d.status.updated_replicas) == (4, 2)
    assert d.status.conditions[0].reason == "MinimumReplicasAvailable"


def test_replicas_unset_is_distinguishable_from_zero() -> None:
    d = json_format.ParseDict({"spec": {}}, apps_pb2.Deployment())
    assert not d.spec.HasField("replicas")




def test_tornado_example_parses() -> None:
    service_doc, deployment_doc = yaml.safe_load_all(TORNADO)  # the seed example as written
    # The tornado documents need no int-or-string rewrite: parse them raw.
    svc = json_format.ParseDict(
        {k: v for k, v in service_doc.items() if k not in ("apiVersion", "kind")},
        service_pb2.Service(),
    )
    assert svc.metadata.name == "tornado-svc" and svc.spec.type == "LoadBalancer"
    assert svc.spec.ports[0].port == 80 and not svc.spec.ports[0].HasField("target_port")
    assert svc.spec.selector == {"app": "tornado"}

    deploy = json_format.ParseDict(
        {k: v for k, v in deployment_doc.items() if k not in ("apiVersion", "kind")},
        apps_pb2.Deployment(),
    )
    assert deploy.spec.replicas == 3 and not deploy.spec.HasField("selector")
    assert deploy.spec.template.metadata.labels == {"app": "tornado"}
    container = deploy.spec.template.spec.containers[0]
    assert container.image.endswith("docker-tornado:latest")
    assert container.ports[0].container_port == 8888


def test_service_and_endpoints_parse() -> None:
    svc = _parse(
        {
            "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.20",
                "clusterIPs": ["10.96.0.20"],
                "externalIPs": ["192.168.56.100"],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [
                    {"name": "pg", "port": 5432, "targetPort": "postgres", "nodePort": 30432},
                    {"name": "metrics", "port": 9187, "targetPort": 9187, "protocol": "TCP"},
                ],
                "selector": {"app": "db"},
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.11"}]}},
        },
        service_pb2.Service(),
    )
    assert svc.spec.cluster_ip == "10.96.0.20" and svc.spec.external_ips == ["192.168.56.100"]
    assert svc.spec.session_affinity_config.client_ip.timeout_seconds == 60
    assert svc.spec.ports[0].target_port.str_value == "postgres"
    assert svc.spec.ports[1].target_port.int_value == 9187
    assert svc.status.load_balancer.ingress[0].ip == "192.168.56.11"

    ep = _parse(
        {
            "metadata": {"name": "db"},
            "subsets": [
                {
                    "addresses": [
                        {
                            "ip": "10.88.1.4",
                            "nodeName": "node-1",
                            "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "default"},
                        }
                    ],
                    "notReadyAddresses": [{"ip": "10.88.2.9"}],
                    "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                }
            ],
        },
        service_pb2.Endpoints(),
    )
    subset = ep.subsets[0]
    assert subset.addresses[0].target_ref.name == "db-0"
    assert subset.addresses[0].node_name == "node-1"
    assert not subset.not_ready_addresses[0].HasField("node_name")
    assert subset.ports[0].port == 5432


def test_acronym_fields_print_as_kubernetes_spells_them() -> None:
    pod = pod_pb2.Pod()
    pod.status.pod_ip = "10.88.0.2"
    pod.status.pod_ips.add(ip="10.88.0.2")
    pod.status.host_ip = "192.168.56.11"
    status = pod.status.container_statuses.add(container_id="podium://1", image_id="sha256:1")
    status.state.terminated.container_id = "podium://0"
    printed = json_format.MessageToDict(pod)["status"]
    assert {"podIP", "podIPs", "hostIP"} <= printed.keys()
    assert {"containerID", "imageID"} <= printed["containerStatuses"][0].keys()
    assert "containerID" in printed["containerStatuses"][0]["state"]["terminated"]

    node = cluster_pb2.Object()
    node.node.spec.pod_cidr = "10.88.1.0/24"
    assert json_format.MessageToDict(node) == {"node": {"spec": {"podCIDR": "10.88.1.0/24"}}}


# --- where Kubernetes' JSON does not fit ----------------------------------


@pytest.mark.parametrize(
    ("manifest", "message", "field", "where"),
    [
        (
            {"spec": {"containers": [{"name": "a", "imagePolicy": "x"}]}},
            pod_pb2.Pod,
            "imagePolicy",
            "Pod.spec.containers[0]",
        ),
        ({"metadata": {"name": "a", "lables": {}}}, pod_pb2.Pod, "lables", "Pod.metadata"),
        (
            {"spec": {"strategy": {"rollingUpdate": {"maxSurges": 1}}}},
            apps_pb2.Deployment,
            "maxSurges",
            "Deployment.spec.strategy.rollingUpdate",
        ),
        (
            {"spec": {"ports": [{"port": 80, "targetPort": 80, "nodeport": 1}]}},
            service_pb2.Service,
            "nodeport",
            "Service.spec.ports[0]",
        ),
        ({"spec": {"affinity": {}}}, pod_pb2.Pod, "affinity", "Pod.spec"),
    ],
)
def test_unknown_fields_are_rejected_naming_the_field(
    manifest: dict[str, Any], message: type[Message], field: str, where: str
) -> None:
    with pytest.raises(json_format.ParseError) as err:
        _parse(manifest, message())
    assert f'no field named "{field}"' in str(err.value)
    assert f'at "{where}"' in str(err.value)


def test_api_version_and_kind_are_the_clients_to_strip() -> None:
    with pytest.raises(json_format.ParseError, match='no field named "apiVersion"'):
        json_format.ParseDict({"apiVersion": "v1", "metadata": {"name": "a"}}, pod_pb2.Pod())


@pytest.mark.parametrize("port", [8080, "http"])
def test_bare_int_or_string_needs_the_clients_rewrite(port: int | str) -> None:
    raw = {"spec": {"containers": [{"name": "a", "livenessProbe": {"tcpSocket": {"port": port}}}]}}
    with pytest.raises(json_format.ParseError, match="port"):
        json_format.ParseDict(raw, pod_pb2.Pod())
    pod = _parse(raw, pod_pb2.Pod())
    parsed = pod.spec.containers[0].liveness_probe.tcp_socket.port
    assert getattr(parsed, parsed.WhichOneof("value")) == port


def test_one_probe_action_and_one_volume_source() -> None:
    both = {"exec": {"command": ["true"]}, "tcpSocket": {"port": {"intValue": 1}}}
    with pytest.raises(json_format.ParseError, match='multiple "action" oneof'):
        json_format.ParseDict(both, pod_pb2.Probe())
    with pytest.raises(json_format.ParseError, match='multiple "source" oneof'):
        json_format.ParseDict(
            {"name": "v", "emptyDir": {}, "hostPath": {"path": "/"}}, pod_pb2.Volume()
        )


def _message_fields(root: Descriptor) -> set[str]:
    found: set[str] = set()
    seen: set[str] = set()
    todo = [root]
    while todo:
        descriptor = todo.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            message = _message_type(field)
            if message.full_name == INT_OR_STRING:
                found.add(f"{descriptor.name}.{field.name}")
            todo.append(message)
    return found


def test_int_or_string_fields() -> None:
    # The fields the client's rewrite touches, found from the descriptors as
    # the client finds them; pinned here so a new one is a conscious change.
    assert _message_fields(cluster_pb2.Object.DESCRIPTOR) == {
        "HTTPGetAction.port",
        "TCPSocketAction.port",
        "ServicePort.target_port",
        "RollingUpdateDeployment.max_surge",
        "RollingUpdateDeployment.max_unavailable",
    }


# --- the object envelope and the services ---------------------------------


def test_object_envelope_holds_every_kind() -> None:
    oneof = cluster_pb2.Object.DESCRIPTOR.oneofs_by_name["kind"]
    kinds = {f.name: _message_type(f).name for f in oneof.fields}
    # The documented mapping: the oneof field is the kind's name in snake_case.
    for field_name, kind in kinds.items():
        assert field_name == "".join(
            "_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(kind)
        )
    assert set(kinds.values()) == {
        "Pod",
        "Node",
        "Namespace",
        "Event",
        "Service",
        "Endpoints",
        "Deployment",
        "ReplicaSet",
    }
    # Every top-level object (one with ObjectMeta metadata) is in the envelope.
    objects = set()
    for module in ("pod", "node", "core", "service", "apps"):
        file = importlib.import_module(f"proto.podium.v1.{module}_pb2").DESCRIPTOR
        for name, message in file.message_types_by_name.items():
            meta = message.fields_by_name.get("metadata")
            if meta is None or name == "PodTemplateSpec":
                continue
            if _message_type(meta).name == "ObjectMeta":
                objects.add(name)
    assert objects == set(kinds.values())

    wrapped = json_format.ParseDict(
        {"replicaSet": {"metadata": {"name": "r"}}}, cluster_pb2.Object()
    )
    assert wrapped.WhichOneof("kind") == "replica_set"


def _methods(service: Any) -> dict[str, tuple[bool, bool]]:
    return {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}


def test_services() -> None:
    from proto.podium.v1 import agent_pb2

    assert _methods(agent_pb2.DESCRIPTOR.services_by_name["AgentService"]) == {
        "ListPods": (False, False),
        "Logs": (False, True),
        "Exec": (True, True),
        "Stats": (False, False),
    }
    assert _methods(cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"]) == {
        "Create": (False, False),
        "Get": (False, False),
        "List": (False, False),
        "Update": (False, False),
        "Apply": (False, False),
        "Delete": (False, False),
        "Watch": (False, True),
        "Scale": (False, False),
        "RegisterNode": (False, False),
        "Heartbeat": (False, False),
        "WatchPods": (False, True),
        "UpdatePodStatus": (False, False),
        "UpdatePodStatuses": (False, False),
        "RecordEvents": (False, False),
        "Logs": (False, True),
        "Exec": (True, True),
        "Stats": (False, False),
    }
    event_types = cluster_pb2.WatchEvent.Type
    assert [event_types.Name(v) for v in event_types.values()][1:] == [
        "ADDED",
        "MODIFIED",
        "DELETED",
        "BOOKMARK",
        "ERROR",
    ]
