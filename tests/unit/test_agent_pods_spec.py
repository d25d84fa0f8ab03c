"""Pod container → ContainerConfig: every mapped field, and errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agent.pods.errors import PodSpecError
from agent.pods.spec import (
    DEFAULT_MOUNTS,
    ImageFacts,
    SandboxFacts,
    container_config,
    plan_volumes,
    validate_pod,
)
from proto.podium.v1 import pod_pb2
from runtime.spec.model import ContainerConfig, Mount, Namespace, User
from runtime.spec.validate import validate

POD_DIR = Path("/run/pods/u1")
LAYERS = (Path("/images/layers/top"), Path("/images/layers/base"))
IMAGE = ImageFacts(lower=LAYERS, entrypoint=("/entry",), cmd=("serve", "--port=80"),
                   env=("PATH=/image/bin:/bin", "LANG=C"), working_dir="/srv", user="")


def pod(**spec: Any) -> pod_pb2.Pod:
    doc = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
           "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


def sandbox(p: pod_pb2.Pod, host_network: bool = False) -> SandboxFacts:
    return SandboxFacts(
        pod_dir=POD_DIR, netns=None if host_network else Path("/run/netns/u1"),
        files=None if host_network else POD_DIR / "network", cgroup_parent="podium",
        volumes=plan_volumes(p, POD_DIR))


def no_lookup(user: str) -> User:
    raise AssertionError(f"no lookup expected, got {user}")


def convert(p: pod_pb2.Pod, index: int = 0, image: ImageFacts = IMAGE,
            lookup: Any = no_lookup) -> ContainerConfig:
    validate_pod(p, POD_DIR)
    cfg = container_config(p, index, image, sandbox(p, p.spec.host_network),
                           POD_DIR / "containers" / p.spec.containers[index].name / "1", lookup)
    validate(cfg)  # the runtime's own checks accept it
    return cfg


def error(p: pod_pb2.Pod, image: ImageFacts = IMAGE) -> str:
    with pytest.raises(PodSpecError) as info:
        convert(p, image=image)
    return str(info.value)


# --- process --------------------------------------------------------------------------


def test_defaults_from_the_image() -> None:
    cfg = convert(pod())
    assert cfg.process.args == ("/entry", "serve", "--port=80")
    assert cfg.process.env == ("PATH=/image/bin:/bin", "LANG=C")
    assert cfg.process.cwd == "/srv"
    assert cfg.process.user == User(0, 0)
    assert cfg.hostname == "web"
    root = cfg.root
    assert root.path == POD_DIR / "containers/app/1/rootfs" and not root.readonly
    assert root.overlay is not None and root.overlay.lower == LAYERS
    assert root.overlay.upper == POD_DIR / "containers/app/1/upper"
    assert root.overlay.work == POD_DIR / "containers/app/1/work"
    assert cfg.cgroups_path == "podium/podu1/app"
    assert cfg.annotations["io.kubernetes.pod.uid"] == "u1"
    assert cfg.annotations["io.kubernetes.container.name"] == "app"


@pytest.mark.parametrize(("command", "args", "argv"), [
    ([], [], ["/entry", "serve", "--port=80"]),
    (["/bin/sh"], [], ["/bin/sh"]),  # command drops the image's Cmd
    ([], ["-x"], ["/entry", "-x"]),  # args replace Cmd only
    (["/bin/sh"], ["-c", "true"], ["/bin/sh", "-c", "true"]),
])
def test_kubernetes_rules_over_entrypoint_and_cmd(
        command: list[str], args: list[str], argv: list[str]) -> None:
    p = pod(containers=[{"name": "app", "image": "i", "command": command, "args": args}])
    assert list(convert(p).process.args) == argv


def test_no_command_at_all_is_an_error_naming_the_field() -> None:
    message = error(pod(), image=IMAGE._replace(entrypoint=None, cmd=None))
    assert message.startswith("spec.containers[0].command: no command to run")


def test_env_image_then_container_with_references() -> None:
    p = pod(containers=[{"name": "app", "image": "i", "command": ["echo", "$(GREETING)", "$$(X)"],
                         "env": [{"name": "LANG", "value": "de_DE"},
                                 {"name": "NAME", "value": "world"},
                                 {"name": "GREETING", "value": "hello $(NAME) $(NOPE)"}]}])
    cfg = convert(p)
    assert cfg.process.env == ("PATH=/image/bin:/bin", "LANG=de_DE", "NAME=world",
                               "GREETING=hello world $(NOPE)")
    assert cfg.process.args == ("echo", "hello world $(NOPE)", "$(X)")


def test_path_is_added_when_nobody_sets_it() -> None:
    cfg = convert(pod(), image=IMAGE._replace(env=()))
    assert cfg.process.env[0].startswith("PATH=/usr/local/sbin:")


def test_value_from_is_refused_by_name() -> None:
    p = pod(containers=[{"name": "app", "image": "i", "env": [
        {"name": "A", "value": "1"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}])
    assert error(p) == "spec.containers[0].env[1].valueFrom: not supported (give a value)"


def test_working_dir_and_bad_working_dir() -> None:
    p = pod(containers=[{"name": "app", "image": "i", "workingDir": "/data"}])
    assert convert(p).process.cwd == "/data"
    assert convert(pod(), image=IMAGE._replace(working_dir="")).process.cwd == "/"
    p = pod(containers=[{"name": "app", "image": "i", "workingDir": "data"}])
    assert error(p) == 'spec.containers[0].workingDir: "data" is not absolute'


def test_user_from_the_image() -> None:
    assert convert(pod(), image=IMAGE._replace(user="1000:50")).process.user == User(1000, 50)
    seen = []

    def lookup(user: str) -> User:
        seen.append(user)
        return User(33, 33, (4,))

    cfg = convert(pod(), image=IMAGE._replace(user="www-data"), lookup=lookup)
    assert seen == ["www-data"] and cfg.process.user == User(33, 33, (4,))


def test_security_context() -> None:
    p = pod(securityContext={"runAsUser": 7, "supplementalGroups": [9]},
            containers=[{"name": "app", "image": "i", "securityContext": {
                "runAsGroup": 8, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}])
    cfg = convert(p)
    assert cfg.process.user == User(7, 8, (9,))
    assert cfg.root.readonly and cfg.process.no_new_privileges
    assert cfg.process.capabilities is not None
    assert cfg.process.capabilities.bounding == {"CAP_NET_BIND_SERVICE"}


def test_security_context_errors() -> None:
    p = pod(containers=[{"name": "app", "image": "i",
                         "securityContext": {"privileged": True}}])
    assert error(p) == "spec.containers[0].securityContext.privileged: not supported"
    p = pod(containers=[{"name": "app", "image": "i",
                         "securityContext": {"capabilities": {"add": ["FLY"]}}}])
    assert error(p) == 'spec.containers[0].securityContext.capabilities.add[0]: ' \
                       '"FLY" is not a capability'
    p = pod(securityContext={"runAsNonRoot": True})
    assert "securityContext.runAsNonRoot: the container would run as root" in error(p)


# --- namespaces and mounts ----------------------------------------------------------------


def test_joins_the_pod_network_and_unshares_the_rest() -> None:
    cfg = convert(pod())
    assert cfg.namespace("network") == Namespace("network", "/run/netns/u1")
    for kind in ("pid", "mount", "ipc", "uts", "cgroup"):
        assert cfg.namespace(kind) == Namespace(kind)


def test_host_network_pid_ipc() -> None:
    cfg = convert(pod(hostNetwork=True, hostPID=True, hostIPC=True))
    assert {ns.type for ns in cfg.namespaces} == {"mount", "cgroup"}
    assert cfg.hostname is None
    assert not any(m.destination.startswith("/etc/") for m in cfg.mounts)


def test_pod_hostname_field() -> None:
    assert convert(pod(hostname="db-0")).hostname == "db-0"


def test_joins_the_pods_ipc_and_uts_namespaces() -> None:
    p = pod()
    validate_pod(p, POD_DIR)
    facts = sandbox(p)._replace(ipc=POD_DIR / "ns/ipc", uts=POD_DIR / "ns/uts")
    cfg = container_config(p, 0, IMAGE, facts, POD_DIR / "containers/app/1", no_lookup)
    validate(cfg)
    assert cfg.namespace("ipc") == Namespace("ipc", str(POD_DIR / "ns/ipc"))
    assert cfg.namespace("uts") == Namespace("uts", str(POD_DIR / "ns/uts"))
    assert cfg.hostname is None  # set on the pod's UTS namespace when it was made
    host = pod(hostNetwork=True)
    facts = sandbox(host, True)._replace(ipc=POD_DIR / "ns/ipc")
    cfg = container_config(host, 0, IMAGE, facts, POD_DIR / "containers/app/1", no_lookup)
    assert cfg.namespace("ipc") == Namespace("ipc", str(POD_DIR / "ns/ipc"))
    assert cfg.namespace("uts") is None and cfg.hostname is None


def test_init_container_config() -> None:
    p = pod(initContainers=[{"name": "setup", "image": "busybox", "command": ["true"]}])
    validate_pod(p, POD_DIR)
    cfg = container_config(p, 0, IMAGE, sandbox(p), POD_DIR / "containers/setup/1",
                           no_lookup, init=True)
    assert cfg.process.args == ("true",)
    assert cfg.cgroups_path == "podium/podu1/setup"
    assert cfg.annotations["io.kubernetes.container.name"] == "setup"


def test_default_and_pod_file_mounts() -> None:
    cfg = convert(pod())
    assert cfg.mounts[:len(DEFAULT_MOUNTS)] == DEFAULT_MOUNTS
    files = {m.destination: m for m in cfg.mounts[len(DEFAULT_MOUNTS):]}
    assert files["/etc/hosts"] == Mount("/etc/hosts", "bind", str(POD_DIR / "network/hosts"),
                                        ("rbind", "rprivate"))
    assert set(files) == {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}


VOLUMES = [
    {"name": "scratch", "emptyDir": {}},
    {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    {"name": "logs", "hostPath": {"path": "/var/log/app/", "type": "DirectoryOrCreate"}},
]


def test_volumes_planned() -> None:
    volumes = plan_volumes(pod(volumes=VOLUMES), POD_DIR)
    assert volumes["scratch"].path == POD_DIR / "volumes/scratch"
    assert volumes["ram"].medium == "Memory" and volumes["ram"].size_limit == 64 * 2**20
    assert volumes["logs"].path == Path("/var/log/app")
    assert volumes["logs"].host_path_type == "DirectoryOrCreate"


def test_volume_mounts() -> None:
    p = pod(volumes=VOLUMES, containers=[{"name": "app", "image": "i", "volumeMounts": [
        {"name": "scratch", "mountPath": "/tmp/s"},
        {"name": "ram", "mountPath": "/cache", "readOnly": True},
        {"name": "logs", "mountPath": "/logs", "subPath": "a/b"},
    ]}])
    mounts = {m.destination: m for m in convert(p).mounts}
    assert mounts["/tmp/s"] == Mount("/tmp/s", "bind", str(POD_DIR / "volumes/scratch"),
                                     ("rbind", "rprivate"))
    assert mounts["/cache"].options == ("rbind", "rprivate", "ro")
    assert mounts["/cache"].source == str(POD_DIR / "volumes/ram")
    assert mounts["/logs"].source == "/var/log/app/a/b"


@pytest.mark.parametrize(("spec", "message"), [
    ({"volumes": [{"name": "v"}]}, "spec.volumes[0]: needs a source (emptyDir or hostPath)"),
    ({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]},
     "spec.volumes[1].name: duplicate volume 'v'"),
    ({"volumes": [{"name": "Bad_Name", "emptyDir": {}}]},
     'spec.volumes[0].name: "Bad_Name" is not a DNS label'),
    ({"volumes": [{"name": "v", "emptyDir": {"medium": "Disk"}}]},
     'spec.volumes[0].emptyDir.medium: "Disk" is not "" or "Memory"'),
    ({"volumes": [{"name": "v", "emptyDir": {"sizeLimit": "lots"}}]},
     'spec.volumes[0].emptyDir.sizeLimit: "lots" is not a quantity'),
    ({"volumes": [{"name": "v", "hostPath": {"path": "rel"}}]},
     'spec.volumes[0].hostPath.path: "rel" is not absolute'),
    ({"volumes": [{"name": "v", "hostPath": {"path": "/x", "type": "Dir"}}]},
     'spec.volumes[0].hostPath.type: "Dir" is not one of'),
    ({"containers": [{"name": "app", "image": "i",
                      "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]},
     'spec.containers[0].volumeMounts[0].name: no volume "nope" in spec.volumes'),
    ({"volumes": [{"name": "v", "emptyDir": {}}],
      "containers": [{"name": "app", "image": "i",
                      "volumeMounts": [{"name": "v", "mountPath": "x"}]}]},
     'spec.containers[0].volumeMounts[0].mountPath: "x" is not absolute'),
    ({"volumes": [{"name": "v", "emptyDir": {}}],
      "containers": [{"name": "app", "image": "i", "volumeMounts": [
          {"name": "v", "mountPath": "/x"}, {"name": "v", "mountPath": "/x/"}]}]},
     'spec.containers[0].volumeMounts[1].mountPath: "/x" is mounted twice'),
    ({"volumes": [{"name": "v", "emptyDir": {}}],
      "containers": [{"name": "app", "image": "i", "volumeMounts": [
          {"name": "v", "mountPath": "/x", "subPath": "../etc"}]}]},
     'spec.containers[0].volumeMounts[0].subPath: "../etc" must be relative'),
    ({"restartPolicy": "Sometimes"},
     'spec.restartPolicy: "Sometimes" is not Always, OnFailure or Never'),
    ({"containers": []}, "spec.containers: needs at least one container"),
    ({"containers": [{"name": "a", "image": "i"}, {"name": "a", "image": "i"}]},
     "spec.containers[1].name: duplicate container 'a'"),
    ({"containers": [{"name": "a"}]}, "spec.containers[0].image: is required"),
    ({"containers": [{"name": "a", "image": "i", "tty": True}]},
     "spec.containers[0].tty: not supported yet"),
    ({"initContainers": [{"name": "a", "image": "i", "readinessProbe": {
        "exec": {"command": ["true"]}}}]},
     "spec.initContainers[0].readinessProbe: must not be set for init containers"),
    ({"initContainers": [{"name": "app", "image": "i"}]},
     "spec.containers[0].name: duplicate container 'app'"),
    ({"initContainers": [{"name": "a", "image": "i", "imagePullPolicy": "Sometimes"}]},
     'spec.initContainers[0].imagePullPolicy: "Sometimes" is not Always, IfNotPresent or '
     "Never"),
])
def test_pod_errors_name_the_field(spec: dict[str, Any], message: str) -> None:
    assert error(pod(**spec)).startswith(message)


# --- resources ------------------------------------------------------------------------


def resources(**res: Any) -> Any:
    return convert(pod(containers=[{"name": "app", "image": "i", "resources": res}])).resources


def test_memory_limit() -> None:
    r = resources(limits={"memory": "128Mi"})
    assert r.memory.limit == 128 * 2**20 and r.memory.swap == 128 * 2**20
    assert resources(limits={"memory": "1Gi"}).memory.limit == 2**30
    assert resources(limits={"memory": "1e9"}).memory.limit == 10**9


def test_cpu_limit_and_request() -> None:
    r = resources(limits={"cpu": "500m"})
    assert (r.cpu.quota, r.cpu.period) == (50_000, 100_000)
    assert r.cpu.shares == 512  # the request defaults to the limit
    r = resources(limits={"cpu": "2"}, requests={"cpu": "250m"})
    assert (r.cpu.quota, r.cpu.shares) == (200_000, 256)
    assert resources(limits={"cpu": "1m"}).cpu.quota == 1000  # the kernel's floor
    assert resources(requests={"cpu": "1"}).cpu == resources(requests={"cpu": "1"}).cpu
    assert resources(requests={"cpu": "1"}).cpu.quota is None


def test_shares_floor_and_ceiling() -> None:
    assert resources().cpu.shares == 2  # best effort
    assert resources(requests={"cpu": "1m"}).cpu.shares == 2
    assert resources(requests={"cpu": "1000"}).cpu.shares == 262_144


@pytest.mark.parametrize(("res", "message"), [
    ({"limits": {"memory": "12Zi"}},
     'spec.containers[0].resources.limits.memory: "12Zi" is not a quantity'),
    ({"limits": {"memory": "0"}}, "spec.containers[0].resources.limits.memory: must be above 0"),
    ({"limits": {"cpu": "-1"}}, 'spec.containers[0].resources.limits.cpu: "-1" is negative'),
    ({"requests": {"cpu": "x"}}, 'spec.containers[0].resources.requests.cpu: "x" is not a'),
    ({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}},
     "spec.containers[0].resources.requests.cpu: must be less than or equal to the cpu limit"),
    ({"limits": {"memory": "1Mi"}, "requests": {"memory": "2Mi"}},
     "spec.containers[0].resources.requests.memory: must be less than or equal"),
    ({"limits": {"gpu": "1"}}, "spec.containers[0].resources.limits.gpu: unsupported resource"),
])
def test_resource_errors(res: dict[str, Any], message: str) -> None:
    p = pod(containers=[{"name": "app", "image": "i", "resources": res}])
    assert error(p).startswith(message)


def test_second_container_errors_say_its_index() -> None:
    p = pod(containers=[{"name": "a", "image": "i"},
                        {"name": "b", "image": "i", "resources": {"limits": {"memory": "12Zi"}}}])
    assert error(p) == 'spec.containers[1].resources.limits.memory: "12Zi" is not a quantity'
