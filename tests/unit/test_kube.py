"""proto.kube: Kubernetes manifests as users write them <-> podium's objects."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from proto import kube
from proto.podium.v1 import apps_pb2, cluster_pb2, pod_pb2, service_pb2
from tests.support.examples import tornado


def _error(text: str, filename: str = "app.yaml") -> str:
    with pytest.raises(kube.ManifestError) as err:
        kube.load_objects(text, filename)
    return str(err.value)


# --- the tornado example ---------------------------------------------------


def test_tornado_example_applies_as_written() -> None:
    service, deployment = kube.load_objects(tornado(), "tornado.yaml")
    assert (service.kind, service.api_version, service.warnings) == ("Service", "v1", ())
    svc = service.message
    assert isinstance(svc, service_pb2.Service)
    assert svc.metadata.name == "tornado-svc" and svc.spec.type == "LoadBalancer"
    assert svc.spec.selector == {"app": "tornado"}
    # Absent targetPort stays absent: Kubernetes defaults it to `port` (80,
    # while the pods listen on 8888) server-side, and so does the scheduler.
    assert svc.spec.ports[0].port == 80 and not svc.spec.ports[0].HasField("target_port")

    assert (deployment.kind, deployment.api_version) == ("Deployment", "extensions/v1beta1")
    d = deployment.object.deployment
    assert deployment.object.WhichOneof("kind") == "deployment"
    assert d.spec.replicas == 3
    # extensions/v1beta1 defaulted the selector to the template's labels.
    assert d.spec.selector.match_labels == {"app": "tornado"}
    assert d.spec.template.spec.containers[0].ports[0].container_port == 8888


def test_old_api_versions_default_the_selector_and_new_ones_do_not() -> None:
    base = yaml.safe_load(tornado().split("---")[1])
    for version, defaulted in [
        ("extensions/v1beta1", True),
        ("apps/v1beta1", True),
        ("apps/v1beta2", False),
        ("apps/v1", False),
    ]:
        (converted,) = kube.load_objects(json.dumps({**base, "apiVersion": version}), "d.json")
        spec = converted.object.deployment.spec
        assert spec.HasField("selector") == defaulted, version
    # A selector that is given is kept as it is.
    base["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    (converted,) = kube.load_objects(json.dumps(base), "d.json")
    assert converted.object.deployment.spec.selector.match_labels == {"app": "other"}


def test_defaulting_leaves_the_document_alone() -> None:
    (doc,) = kube.load_documents(tornado().split("---")[1], "d.yaml")
    kube.to_object(doc)
    assert "selector" not in doc.body["spec"]


def test_unknown_field_names_file_document_path_and_line() -> None:
    text = tornado().replace("        ports:", "        imagePullSecretz: []\n        ports:")
    message = _error(text, "tornado.yaml")
    assert message.startswith(
        "tornado.yaml, document 2: spec.template.spec.containers[0].imagePullSecretz: unknown field"
    )
    line = text.splitlines().index("        imagePullSecretz: []") + 1
    assert message.endswith(f"(line {line})")


def test_supported_elsewhere_but_not_by_podium_is_a_warning() -> None:
    text = tornado().replace(
        "      containers:", "      imagePullSecrets: [{name: regcred}]\n      containers:"
    )
    _, deployment = kube.load_objects(text, "tornado.yaml")
    line = text.splitlines().index("      imagePullSecrets: [{name: regcred}]") + 1
    assert deployment.warnings == (
        f"tornado.yaml, document 2: spec.template.spec.imagePullSecrets: "
        f"not supported by podium, ignored (line {line})",
    )
    assert deployment.object.deployment.spec.template.spec.containers[0].name == "tornado"


def test_unsupported_volume_source_is_an_error_not_a_sourceless_volume() -> None:
    message = _error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n"
        "  volumes:\n  - name: cfg\n    configMap: {name: cfg}\n"
    )
    assert message == (
        "app.yaml, document 1: spec.volumes[0].configMap: not supported by podium (line 7)"
    )


# --- pods: probes, quantities, timestamps ----------------------------------

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: [httpd, -f, -p, "8080"]
    ports:
    - {name: http, containerPort: 8080}
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: 1, memory: 128Mi}
    livenessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 5
    readinessProbe:
      tcpSocket: {port: http}
    startupProbe:
      httpGet: {path: /ready, port: http}
  terminationGracePeriodSeconds: 10
  volumes:
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
status:
  phase: Running
  startTime: 2024-05-01T12:00:00Z
"""


def test_pod_with_named_and_numeric_probe_ports_and_quantities() -> None:
    (converted,) = kube.load_objects(POD, "pod.yaml")
    pod = converted.message
    assert isinstance(pod, pod_pb2.Pod)
    app = pod.spec.containers[0]
    assert app.liveness_probe.http_get.port.int_value == 8080
    assert app.readiness_probe.tcp_socket.port.str_value == "http"
    assert app.startup_probe.http_get.port.str_value == "http"
    # `cpu: 1` is a number in YAML; a quantity stays a string.
    assert dict(app.resources.limits) == {"cpu": "1", "memory": "128Mi"}
    assert dict(app.resources.requests) == {"cpu": "250m", "memory": "64Mi"}
    assert pod.spec.volumes[0].empty_dir.size_limit == "64Mi"
    # An unquoted timestamp is not turned into a datetime on the way.
    assert pod.status.start_time.seconds == 1714564800


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "containerPort: 8080}",
            'containerPort: "8080"}',
            "spec.containers[0].ports[0].containerPort: expected an integer, "
            "found a string ('8080') (line 12)",
        ),
        (
            "{cpu: 1, memory: 128Mi}",
            "{cpu: lots, memory: 128Mi}",
            "spec.containers[0].resources.limits.cpu: 'lots' is not a quantity",
        ),
        (
            "tcpSocket: {port: http}",
            "tcpSocket: {port: true}",
            "spec.containers[0].readinessProbe.tcpSocket.port: "
            "expected a number or a string, found a boolean",
        ),
        (
            "      periodSeconds: 5",
            "      exec: {command: [true]}",
            "spec.containers[0].livenessProbe.exec: only one of httpGet and exec may be set",
        ),
        (
            "startTime: 2024-05-01T12:00:00Z",
            "startTime: yesterday",
            "status.startTime: 'yesterday' is not an RFC 3339 time",
        ),
        ("  labels: {app: web}", "  labels: {app: 1}", "metadata.labels.app: expected a string"),
        ("  labels: {app: web}", "  lables: {app: web}", 'did you mean "labels"?'),
    ],
)
def test_pod_field_errors(old: str, new: str, expected: str) -> None:
    assert old in POD
    message = _error(POD.replace(old, new), "pod.yaml")
    assert message.startswith("pod.yaml, document 1: ")
    assert expected in message


def test_null_means_unset() -> None:
    (converted,) = kube.load_objects(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, creationTimestamp: null}\n"
        "spec: {containers: [{name: a, image: b, resources: {}}], nodeName: null}\n",
        "a.yaml",
    )
    assert not converted.object.pod.metadata.HasField("creation_timestamp")


# --- several documents, List kinds, JSON -----------------------------------


def test_multi_document_file_counts_empty_documents() -> None:
    text = "---\n---\n" + POD + "---\n# only a comment\n---\n" + tornado()
    docs = kube.load_documents(text, "all.yaml")
    assert [d.number for d in docs] == [2, 4, 5]
    assert [d.body["kind"] for d in docs] == ["Pod", "Service", "Deployment"]
    bad = text.replace("name: tornado-deploy", "name: tornado-deploy\n  nmae: x")
    assert _error(bad).startswith("app.yaml, document 5: metadata.nmae: unknown field")


def test_list_kinds_expand_and_errors_point_into_items() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: shop}
  spec:
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec: {containers: [{name: web, image: nginx}]}
"""
    converted = kube.load_objects(text, "list.yaml")
    assert [c.kind for c in converted] == ["Namespace", "Deployment"]
    message = _error(text.replace("image: nginx", "image: nginx, imag: x"))
    assert message == (
        "app.yaml, document 1: items[1].spec.template.spec.containers[0].imag: "
        'unknown field, did you mean "image"? (line 14)'
    )


def test_typed_lists_lend_their_kind_to_items() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}],
    }
    converted = kube.load_objects(json.dumps(listing, indent=2), "pods.json")
    assert [c.object.pod.metadata.name for c in converted] == ["a", "b"]


def test_json_files_and_their_errors() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labelz": {}}}
    message = _error(json.dumps(pod, indent=2), "pod.json")
    assert message == (
        'pod.json, document 1: metadata.labelz: unknown field, did you mean "labels"? (line 6)'
    )
    assert _error('{"apiVersion": "v1",\n "kind": }', "pod.json") == (
        "pod.json, line 2, column 10: Expecting value"
    )


def test_flow_style_yaml_is_not_mistaken_for_json() -> None:
    (converted,) = kube.load_objects("{apiVersion: v1, kind: Namespace, metadata: {name: a}}")
    assert converted.object.namespace.metadata.name == "a"


def test_yaml_syntax_error_gives_line_and_column() -> None:
    message = _error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   labels: x\n")
    assert message.startswith("app.yaml, line 5, column 10: ")
    message = _error("apiVersion: v1\nkind: [Pod\n")
    assert message.startswith("app.yaml, line 3, column 1: ")


def test_a_document_must_be_a_mapping() -> None:
    assert _error("apiVersion: v1\n---\n- a\n") == (
        "app.yaml, document 2: expected a mapping, found a list"
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\n",
            'apiVersion "networking.k8s.io/v1" (kind "Ingress") is not supported',
        ),
        ("apiVersion: v1\nkind: ConfigMap\n", 'kind "ConfigMap" of apiVersion "v1"'),
        ("apiVersion: v1\nkind: Deployment\n", 'kind "Deployment" of apiVersion "v1"'),
        ("apiVersion: apps/v1\nkind: Pod\n", 'kind "Pod" of apiVersion "apps/v1"'),
        ("kind: Pod\n", "apiVersion is missing"),
        ("apiVersion: v1\n", "kind is missing"),
    ],
)
def test_unknown_kind_or_api_version(head: str, expected: str) -> None:
    message = _error(head + "metadata: {name: a}\n")
    assert message.startswith("app.yaml, document 1: ")
    assert expected in message


# --- back to manifests -----------------------------------------------------


def _round_trip(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (doc,) = kube.load_documents(text, "x.yaml")
    return kube.to_manifest(kube.to_object(doc).object), doc.body


def test_round_trip_pod() -> None:
    # Quantities come back as strings, as Kubernetes prints them.
    text = POD.replace("cpu: 1,", 'cpu: "1",')
    printed, original = _round_trip(text)
    assert printed == original
    assert list(printed)[:2] == ["apiVersion", "kind"]
    spec = printed["spec"]
    assert spec["terminationGracePeriodSeconds"] == 10  # int64: a number, not "10"
    assert spec["containers"][0]["readinessProbe"]["tcpSocket"]["port"] == "http"


def test_round_trip_deployment() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 25%}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80}]
"""
    printed, original = _round_trip(text)
    assert printed == original


def test_to_manifest_takes_typed_objects_and_writes_the_current_api_version() -> None:
    d = apps_pb2.Deployment()
    d.metadata.name = "x"
    assert kube.to_manifest(d) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
    }
    with pytest.raises(ValueError, match="holds no object"):
        kube.to_manifest(cluster_pb2.Object())


def test_every_kind_has_an_api_version() -> None:
    oneof = cluster_pb2.Object.DESCRIPTOR.oneofs_by_name["kind"]
    kinds = {f.message_type.name for f in oneof.fields if f.message_type is not None}
    accepted = {k for ks in kube.API_VERSIONS.values() for k in ks}
    assert accepted == kinds
    for kind in kinds:
        assert kind in kube.API_VERSIONS["v1"] or kind in kube.API_VERSIONS["apps/v1"]


def test_field_tables_name_real_messages() -> None:
    # The tables of quantity, ignored and rejected fields are keyed by
    # descriptor names: a renamed message or field must fail here, not
    # silently stop matching.
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for name in kube._QUANTITY_FIELDS:
        message, _, field = name.rpartition(".")
        assert field in pool.FindMessageTypeByName(message).fields_by_name, name
    for table in (kube._IGNORED, kube._REJECTED):
        for message, names in table.items():
            known = {f.json_name for f in pool.FindMessageTypeByName(message).fields}
            assert not names & known, (message, names & known)


def test_a_field_spelled_both_ways_takes_the_later_value_whole() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a", "image": "x"}],
                    "init_containers": [{"name": "i1", "image": "x"}],
                    "initContainers": [{"name": "i2", "image": "x"}]}}
    (converted,) = kube.load_objects(json.dumps(pod), "p.json")
    assert [c.name for c in converted.object.pod.spec.init_containers] == ["i2"]


def test_an_unpaired_surrogate_is_an_error_naming_its_field() -> None:
    text = '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p\\ud800"}}'
    # (No line: YAML, which finds the lines, refuses the escape.)
    assert _error(text, "p.json") == (
        "p.json, document 1: metadata.name: not valid Unicode (an unpaired surrogate)")


def test_an_empty_message_is_set() -> None:
    (converted,) = kube.load_objects(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {}\n")
    assert converted.object.pod.spec.HasField("security_context")
