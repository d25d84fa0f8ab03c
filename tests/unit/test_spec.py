"""config.json -> ContainerConfig: conversion and validation, field by field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runtime import syscalls as sc
from runtime.errors import BundleError, ConfigError
from runtime.spec import convert, default_config, load_bundle, validate
from runtime.spec.model import DEFAULT_CAPABILITIES, ContainerConfig
from runtime.spec.mountopts import parse_mount_options

BUNDLE = Path("/bundle")


def conv(data: dict[str, Any]) -> ContainerConfig:
    config = convert(data, BUNDLE).config
    validate(config)
    return config


def base() -> dict[str, Any]:
    return copy.deepcopy(default_config(["sh", "-c", "true"]))


def test_default_config_converts_and_validates() -> None:
    c = conv(base())
    assert c.process.args == ("sh", "-c", "true")
    assert c.root.path == BUNDLE / "rootfs" and c.root.readonly
    assert {n.type for n in c.namespaces} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert c.process.capabilities is not None
    assert c.process.capabilities.bounding == frozenset(DEFAULT_CAPABILITIES)
    assert c.process.no_new_privileges
    assert c.hostname == "podium"


def test_fields_are_converted() -> None:
    data = base()
    data["process"]["user"] = {"uid": 1000, "gid": 100, "additionalGids": [5, 6], "umask": 18}
    data["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    data["process"]["oomScoreAdj"] = 100
    data["linux"]["resources"] = {"memory": {"limit": 1 << 20, "swap": 2 << 20},
                                  "cpu": {"shares": 512, "quota": 50000, "period": 100000,
                                          "cpus": "0"},
                                  "pids": {"limit": 32}}
    data["linux"]["cgroupsPath"] = "/mine/x"
    data["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    data["linux"]["namespaces"].append({"type": "user"})
    data["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    data["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    data["annotations"] = {"a": "b"}
    c = conv(data)
    assert c.process.user.uid == 1000 and c.process.user.additional_gids == (5, 6)
    assert c.process.user.umask == 18 and c.process.oom_score_adj == 100
    assert c.process.rlimits[0].soft == 10
    assert c.resources.memory.limit == 1 << 20 and c.resources.memory.swap == 2 << 20
    assert c.resources.cpu.quota == 50000 and c.resources.cpu.cpus == "0"
    assert c.resources.pids.limit == 32
    assert c.cgroups_path == "/mine/x"
    assert c.uid_mappings[0].host_id == 100000
    assert c.annotations == {"a": "b"}


def test_absent_masked_paths_keep_defaults_and_empty_list_clears() -> None:
    data = base()
    del data["linux"]["maskedPaths"]
    assert "/proc/kcore" in conv(data).masked_paths
    data["linux"]["maskedPaths"] = []
    assert conv(data).masked_paths == ()


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["process"].__setitem__("args", "sh"), "process.args", "must be a list"),
    (lambda d: d["process"].__setitem__("args", []), "process.args", "must name"),
    (lambda d: d["process"].__setitem__("cwd", "tmp"), "process.cwd", "absolute"),
    (lambda d: d["process"].__setitem__("env", ["NOEQUALS"]), "process.env[0]", "NAME=VALUE"),
    (lambda d: d["process"]["capabilities"]["bounding"].append("CAP_NOPE"),
     "process.capabilities.bounding", "CAP_NOPE"),
    (lambda d: d["process"].__setitem__("rlimits",
                                        [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]),
     "process.rlimits[0].type", "unknown rlimit"),
    (lambda d: d["process"].__setitem__("rlimits",
                                        [{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 1}]),
     "process.rlimits[0]", "above hard"),
    (lambda d: d["linux"]["namespaces"].append({"type": "bogus"}), "linux.namespaces[6].type",
     "unknown namespace"),
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[6].type",
     "twice"),
    (lambda d: d.__setitem__("ociVersion", "2.0.0"), "ociVersion", "1.0.0 through 1.3.x"),
    (lambda d: d["mounts"].append({"destination": "rel", "type": "tmpfs"}),
     "mounts[6].destination", "absolute"),
    (lambda d: d["mounts"].append({"destination": "/x", "type": "tmpfs", "options": ["bogus"]}),
     "mounts[6].options", "bogus"),
    (lambda d: d["linux"].__setitem__("sysctl", {"kernel.panic": "1"}), "linux.sysctl.kernel.panic",
     "change the host"),
    (lambda d: d["linux"].__setitem__("uidMappings",
                                      [{"containerID": 0, "hostID": 1, "size": 1}]),
     "linux.uidMappings", "user namespace"),
    (lambda d: d["linux"].__setitem__("resources", {"cpu": {"shares": 1}}),
     "linux.resources.cpu.shares", "between"),
    (lambda d: d["linux"].__setitem__("resources", {"blockIO": {"weight": 10}}),
     "linux.resources.blockIO", "not supported"),
    (lambda d: d["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                                                  "listenerPath": "/run/agent.sock"}),
     "linux.seccomp.listenerPath", "not supported"),
    (lambda d: d["process"].__setitem__("selinuxLabel", "x"), "process.selinuxLabel", "SELinux"),
    (lambda d: d["linux"].__setitem__("cgroupsPath", "a/../b"), "linux.cgroupsPath", ".."),
    (lambda d: d["linux"].__setitem__("rootfsPropagation", "weird"), "linux.rootfsPropagation",
     "not one of"),
    (lambda d: d["linux"]["namespaces"].remove({"type": "uts"}), "hostname", "uts"),
    (lambda d: d.__delitem__("process"), "process", "missing"),
    (lambda d: d["root"].__setitem__("readonly", "yes"), "root.readonly", "boolean"),
])
def test_bad_fields_are_named(mutate: Any, field: str, words: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        conv(data)
    assert info.value.field == field
    assert words in str(info.value)


def test_empty_values_of_refused_fields_count_as_absent() -> None:
    data = base()
    data["linux"]["resources"]["blockIO"] = {}
    data["linux"]["seccomp"] = None
    data["hooks"] = {}
    conv(data)


def test_unknown_fields_are_ignored_with_a_warning() -> None:
    data = base()
    data["process"]["futureThing"] = 1
    data["somethingNew"] = {"x": 1}
    converted = convert(data, BUNDLE)
    assert converted.warnings == ("process.futureThing: unknown field, ignored",
                                  "somethingNew: unknown field, ignored") or \
        set(converted.warnings) == {"process.futureThing: unknown field, ignored",
                                    "somethingNew: unknown field, ignored"}


def test_load_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "missing")
    with pytest.raises(BundleError, match="no config.json"):
        load_bundle(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON.*line 1"):
        load_bundle(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(base()))
    with pytest.raises(BundleError, match="root.path .*rootfs: no such directory"):
        load_bundle(tmp_path)
    (tmp_path / "rootfs").mkdir()
    assert load_bundle(tmp_path).config.root.path == tmp_path / "rootfs"


def test_mount_options() -> None:
    flags = parse_mount_options(["nosuid", "nodev", "ro", "mode=755", "rprivate"])
    assert flags.flags == sc.MS_NOSUID | sc.MS_NODEV | sc.MS_RDONLY
    assert flags.propagation == sc.MS_PRIVATE | sc.MS_REC
    assert flags.data == "mode=755"
    assert parse_mount_options(["rbind", "rw"]).flags == sc.MS_BIND | sc.MS_REC
    assert parse_mount_options(["ro", "rw"]).flags == 0
    with pytest.raises(ValueError, match="'nope'"):
        parse_mount_options(["nope"])


def test_missing_capabilities_mean_dockers_default_set() -> None:
    data = base()
    del data["process"]["capabilities"]
    caps = conv(data).process.capabilities
    assert caps is not None and caps.bounding == frozenset(DEFAULT_CAPABILITIES)
    assert caps.ambient == frozenset()


@pytest.mark.parametrize("spec, path", [
    ("system.slice:podium:abc", "system.slice/podium-abc.scope"),
    ("a-b.slice:podium:x", "a.slice/a-b.slice/podium-x.scope"),
    (":podium:x", "podium-x.scope"),
    ("machine.slice::x", "machine.slice/x.scope"),
])
def test_systemd_cgroup_paths(spec: str, path: str) -> None:
    from runtime.create import systemd_cgroup_path

    assert systemd_cgroup_path(spec) == path


@pytest.mark.parametrize("bad", ["plain/path", "a:b", "x.scope:p:n", "s.slice:p:"])
def test_bad_systemd_cgroup_paths(bad: str) -> None:
    from runtime.create import systemd_cgroup_path

    with pytest.raises(ConfigError, match="linux.cgroupsPath"):
        systemd_cgroup_path(bad)


def test_configs_built_in_code_survive_pickling() -> None:
    import pickle

    from runtime.spec.model import Process, Root

    config = ContainerConfig(oci_version="1.2.0", process=Process(args=("true",)),
                             root=Root(path=Path("/r")))
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert dict(copy.sysctl) == {} and dict(copy.annotations) == {}
