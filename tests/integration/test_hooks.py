"""OCI hooks on the real kernel: each at its point, in its namespace, with the state
the spec gives for that point, and failures as the spec says.

Every hook here is one shell script, ``hook.sh NAME DIR``, which appends
``NAME STATUS PID MNT-NAMESPACE`` to ``DIR/log`` and keeps its stdin in
``DIR/NAME.json``. The test directory is also bind-mounted at /tmp in the
container, for startContainer, whose path resolves in the container's root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Runtime
from runtime.errors import SetupError
from runtime.spec import convert, default_config
from runtime.state import Status
from tests.conftest import need_root

pytestmark = pytest.mark.root

BINARY = Path(sys.executable).with_name("podium-runtime")
INSIDE = "/tmp"  # where the test directory is in the container

HOOK = """#!/bin/sh
state=$(cat)
status=$(echo "$state" | sed 's/.*"status": "\\([a-z]*\\)".*/\\1/')
pid=$(echo "$state" | sed 's/.*"pid": \\([0-9]*\\).*/\\1/')
echo "$1 $status $pid $(readlink /proc/self/ns/mnt)" >> "$2/log"
echo "$state" > "$2/$1.json"
"""

POINTS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
          "poststop")


def bundle(tmp_dir: Path, rootfs: Path, args: list[str], **special: str) -> dict[str, Any]:
    """config.json data with every hook logging; ``special`` swaps a point's script
    for one of its own (a shell command)."""
    script = tmp_dir / "hook.sh"
    script.write_text(HOOK)
    script.chmod(0o755)
    data = default_config(args)
    data["root"]["path"] = str(rootfs)
    data["annotations"] = {"org.example.hooks": "yes"}
    data["mounts"].append({"destination": INSIDE, "type": "bind", "source": str(tmp_dir),
                           "options": ["rbind", "rw"]})
    hooks: dict[str, list[dict[str, Any]]] = {}
    for point in POINTS:
        where = INSIDE if point == "startContainer" else str(tmp_dir)
        entry: dict[str, Any] = {"path": f"{where}/hook.sh", "args": ["hook.sh", point, where]}
        if point in special:
            custom = tmp_dir / f"{point}.sh"
            custom.write_text(f"#!/bin/sh\n{special[point]}\n")
            custom.chmod(0o755)
            entry = {"path": f"{where}/{point}.sh"}
        hooks[point] = [entry]
    data["hooks"] = hooks
    return data


def log(tmp_dir: Path) -> list[list[str]]:
    path = tmp_dir / "log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def mnt_ns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def test_hooks_run_in_order_with_the_state_and_namespaces_the_spec_names(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    data = bundle(tmp_dir, busybox_rootfs, ["true"])
    created = rt.create("hooked", convert(data, tmp_dir).config, bundle=tmp_dir)
    pid = created.pid
    container_ns = mnt_ns(pid)
    host_ns = mnt_ns("self")
    assert container_ns != host_ns
    assert [entry[0] for entry in log(tmp_dir)] == ["prestart", "createRuntime",
                                                    "createContainer"]
    rt.start("hooked")
    os.waitpid(pid, 0)
    rt.delete("hooked")
    assert log(tmp_dir) == [
        ["prestart", "creating", str(pid), host_ns],
        ["createRuntime", "creating", str(pid), host_ns],
        ["createContainer", "creating", str(pid), container_ns],
        ["startContainer", "created", str(pid), container_ns],
        ["poststart", "running", str(pid), host_ns],
        ["poststop", "stopped", "0", host_ns],
    ]
    for point in POINTS:
        state = json.loads((tmp_dir / f"{point}.json").read_text())
        assert state["ociVersion"] == data["ociVersion"]
        assert state["id"] == "hooked"
        assert state["bundle"] == str(tmp_dir)
        assert state["annotations"] == {"org.example.hooks": "yes"}


def test_create_runtime_hooks_find_the_init_in_its_cgroup_namespace_and_cgroup(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path, cgroup_parent: str) -> None:
    # The init makes its cgroup namespace late (after building its root), but still
    # before this point: hooks here may look the init up by its cgroup.
    look = ('pid=$(sed \'s/.*"pid": \\([0-9]*\\).*/\\1/\'); '
            f'cat /proc/$pid/cgroup > {tmp_dir}/cgroup; '
            f'readlink /proc/$pid/ns/cgroup > {tmp_dir}/cgroupns')
    data = bundle(tmp_dir, busybox_rootfs, ["true"], createRuntime=look)
    rt.create("placed", convert(data, tmp_dir).config, bundle=tmp_dir)
    try:
        lines = (tmp_dir / "cgroup").read_text().splitlines()
        # As the host sees it, every hierarchy podium uses holds the init in the
        # container's cgroup: the v1 ones where there are any (a hybrid host's empty
        # unified one is not used), else the unified one.
        used = [line for line in lines if line.split(":")[1]] or lines
        assert used and all(line.endswith(f"/{cgroup_parent}/placed") for line in used), lines
        assert (tmp_dir / "cgroupns").read_text().strip() != os.readlink("/proc/self/ns/cgroup")
    finally:
        rt.delete("placed", force=True)  # kills and reaps the init


def test_hooks_with_a_user_namespace_see_the_init_and_run_as_its_root(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    # Two forks: stage 1 reports the init's PID, maybe after the init asked for its hooks.
    os.chmod(tmp_dir, 0o777)  # the mapped root owns nothing of the host's
    data = bundle(tmp_dir, busybox_rootfs, ["true"])
    data["mounts"][-1]["destination"] = "/home"  # an existing mount point, as in test_runtime
    data["hooks"]["startContainer"][0] = {"path": "/home/hook.sh",
                                          "args": ["hook.sh", "startContainer", "/home"]}
    data["linux"]["namespaces"].append({"type": "user"})
    data["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    data["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    (tmp_dir / "log").touch()
    os.chmod(tmp_dir / "log", 0o666)
    created = rt.create("hooked-userns", convert(data, tmp_dir).config, bundle=tmp_dir)
    rt.start("hooked-userns")
    os.waitpid(created.pid, 0)
    rt.delete("hooked-userns")
    assert [(e[0], e[1], e[2]) for e in log(tmp_dir)] == [
        ("prestart", "creating", str(created.pid)),
        ("createRuntime", "creating", str(created.pid)),
        ("createContainer", "creating", str(created.pid)),
        ("startContainer", "created", str(created.pid)),
        ("poststart", "running", str(created.pid)),
        ("poststop", "stopped", "0"),
    ]


def test_a_failing_create_runtime_hook_fails_create_and_leaves_nothing(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    data = bundle(tmp_dir, busybox_rootfs, ["true"],
                  createRuntime="echo 'no network for you' >&2; exit 4")
    with pytest.raises(SetupError) as info:
        rt.create("bad-runtime", convert(data, tmp_dir).config, bundle=tmp_dir)
    assert str(info.value) == (f"hooks.createRuntime[0]: {tmp_dir}/createRuntime.sh exited "
                               "with status 4: no network for you")
    assert not rt.store.dir("bad-runtime").exists()
    # No createContainer; the spec goes on to delete, so poststop runs (the leak
    # check sees to the cgroup and the init).
    assert [e[0] for e in log(tmp_dir)] == ["prestart", "poststop"]


def test_a_failing_create_container_hook_fails_create_from_inside(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    data = bundle(tmp_dir, busybox_rootfs, ["true"],
                  createContainer="readlink /proc/self/ns/mnt >&2; exit 1")
    with pytest.raises(SetupError) as info:
        rt.create("bad-container", convert(data, tmp_dir).config, bundle=tmp_dir)
    message = str(info.value)
    assert message.startswith(f"hooks.createContainer[0]: {tmp_dir}/createContainer.sh "
                              "exited with status 1: mnt:[")
    assert message.split(": ")[-1] != mnt_ns("self")  # it ran in the container's
    assert not rt.store.dir("bad-container").exists()


def test_a_hook_past_its_timeout_is_killed_and_create_fails(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    data = bundle(tmp_dir, busybox_rootfs, ["true"], createRuntime="sleep 60")
    data["hooks"]["createRuntime"][0]["timeout"] = 1
    with pytest.raises(SetupError, match=r"hooks.createRuntime\[0\]: .* did not finish "
                                         r"within its timeout of 1s: killed"):
        rt.create("slow", convert(data, tmp_dir).config, bundle=tmp_dir)
    assert not rt.store.dir("slow").exists()
    # The leak check fails the test if the hook's sleep outlived it.


def test_a_failing_start_container_hook_fails_start_and_stops_the_container(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    data = bundle(tmp_dir, busybox_rootfs, ["touch", f"{INSIDE}/user-code-ran"],
                  startContainer="echo 'ldconfig failed' >&2; exit 9")
    rt.create("bad-start", convert(data, tmp_dir).config, bundle=tmp_dir)
    with pytest.raises(SetupError) as info:
        rt.start("bad-start")
    assert str(info.value) == ("hooks.startContainer[0]: /tmp/startContainer.sh exited "
                               "with status 9: ldconfig failed")
    assert rt.state("bad-start").status is Status.STOPPED
    assert not (tmp_dir / "user-code-ran").exists()
    assert "poststart" not in [e[0] for e in log(tmp_dir)]
    rt.delete("bad-start")  # start has reaped the init already
    assert log(tmp_dir)[-1][:3] == ["poststop", "stopped", "0"]


def test_failing_poststart_and_poststop_hooks_only_warn(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = bundle(tmp_dir, busybox_rootfs, ["true"], poststart="echo late >&2; exit 1",
                  poststop="echo gone >&2; exit 2")
    created = rt.create("warned", convert(data, tmp_dir).config, bundle=tmp_dir)
    assert rt.start("warned").status is Status.RUNNING
    os.waitpid(created.pid, 0)
    rt.delete("warned")
    assert not rt.store.dir("warned").exists()
    err = capsys.readouterr().err
    assert f"warning: hooks.poststart[0]: {tmp_dir}/poststart.sh exited with status 1: late" \
        in err
    assert f"warning: hooks.poststop[0]: {tmp_dir}/poststop.sh exited with status 2: gone" \
        in err


def test_the_command_line_runs_the_hooks_and_reads_them_from_create_time(
        busybox_rootfs: Path, tmp_dir: Path, cgroup_parent: str) -> None:
    need_root()
    data = bundle(tmp_dir, busybox_rootfs, ["true"], poststop="echo gone >&2; exit 2")
    (tmp_dir / "config.json").write_text(json.dumps(data))
    base = [str(BINARY), "--root", str(tmp_dir / "state"), "--cgroup-parent", cgroup_parent]

    def cli(*args: str) -> tuple[int, str]:
        # Files, not pipes: create hands its stdio to the container's init.
        with open(tmp_dir / "out", "w+") as out:
            code = subprocess.run(base + list(args), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=out, timeout=30).returncode
            out.seek(0)
            return code, out.read()

    code, out = cli("create", "--bundle", str(tmp_dir), "--pid-file", str(tmp_dir / "pid"),
                    "cli-hooked")
    assert code == 0, out
    pid = int((tmp_dir / "pid").read_text())
    # Changes to config.json after create do not reach the container's hooks.
    (tmp_dir / "config.json").write_text(json.dumps(dict(data, hooks={})))
    assert cli("start", "cli-hooked") == (0, "")
    os.waitpid(pid, 0)
    code, out = cli("delete", "cli-hooked")
    assert code == 0, out
    assert "hooks.poststop[0]" in out and "gone" in out
    assert [e[:3] for e in log(tmp_dir)] == [
        ["prestart", "creating", str(pid)], ["createRuntime", "creating", str(pid)],
        ["createContainer", "creating", str(pid)], ["startContainer", "created", str(pid)],
        ["poststart", "running", str(pid)],
    ]
