"""The runtime library on the real kernel: isolation, limits, privileges, lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Runtime
from runtime.errors import CgroupError, ConfigError, IllegalTransition, SetupError
from runtime.shim import exit_record, spawn_shim
from runtime.spec import ContainerConfig, convert, default_config
from runtime.spec.model import Cpu, Memory, Pids, Resources
from runtime.state import Status
from tests.support.containers import run_to_completion as run


def config(rootfs: Path, *args: str, **linux: Any) -> ContainerConfig:
    data = default_config(list(args))
    data["root"]["path"] = str(rootfs)
    data["linux"].update(linux)
    return convert(data, rootfs).config



def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- isolation -------------------------------------------------------------------


def test_init_is_pid_1_and_sees_no_host_process(rt: Runtime, busybox_rootfs: Path) -> None:
    code, out = run(rt, "iso-pid", config(busybox_rootfs, "sh", "-c", "echo $$; ls /proc"))
    assert code == 0
    lines = out.split()
    assert lines[0] == "1"
    pids = sorted(int(x) for x in lines[1:] if x.isdigit())
    assert pids == [1, 2] or pids == [1], pids  # sh itself, maybe ls


def test_hostname_mounts_and_network_are_its_own(rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sh", "-c",
                 "hostname; echo ---; cat /proc/self/mountinfo; echo ---; ls /sys/class/net"
                 )._replace(hostname="box-1")
    code, out = run(rt, "iso-uts", cfg)
    assert code == 0
    hostname, mountinfo, netdevs = out.split("---\n")
    assert hostname.strip() == "box-1" and os.uname().nodename != "box-1"
    points = [line.split()[4] for line in mountinfo.splitlines()]
    assert points[0] == "/"  # its own root, the host's is detached
    assert {"/proc", "/dev", "/dev/pts", "/sys"} <= set(points)
    host_points = {line.split()[4] for line in open("/proc/self/mountinfo")}
    assert not {p for p in points if p.startswith("/sys/fs/cgroup/")} & host_points
    assert netdevs.split() == ["lo"]


# -- limits ----------------------------------------------------------------------


def test_memory_hog_is_oom_killed_and_reported(rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sh", "-c",
                 "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; "
                 "while true; do x=$x$x; done")._replace(
        resources=Resources(memory=Memory(limit=32 * 1024 * 1024, swap=32 * 1024 * 1024)))
    spawn_shim(rt, "oom", config=cfg)
    wait_for(lambda: exit_record(rt, "oom") is not None, timeout=30)
    record = exit_record(rt, "oom")
    assert record is not None
    assert record["oomKilled"] is True
    assert record["signal"] == signal.SIGKILL
    assert rt.state("oom").status is Status.STOPPED


def test_fork_bomb_is_held_by_the_pids_limit(rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sleep", "60")._replace(
        resources=Resources(pids=Pids(limit=10)))
    rt.create("bomb", cfg)
    state = rt.start("bomb")
    # busybox sh gives up at the first fork the kernel refuses.
    r, w = os.pipe()
    bomb = rt.exec("bomb", cfg.process._replace(args=(
        "sh", "-c", "for i in $(seq 1 40); do sleep 30 & done; echo ALL-FORKED")),
        stdio=(None, w, w))
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(bomb, 0)
    stats = rt.stats("bomb")
    assert b"can't fork" in out and b"ALL-FORKED" not in out
    assert 2 <= stats.pids_current <= 10
    assert stats.pids_limit == 10
    rt.delete("bomb", force=True)
    _reap(state.pid)
    assert rt.containers() == []


def test_cpu_quota_shows_in_cpu_stats(rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sh", "-c", "while true; do :; done")._replace(
        resources=Resources(cpu=Cpu(quota=10_000, period=100_000)))
    rt.create("cpu", cfg)
    rt.start("cpu")
    time.sleep(1.0)
    stats = rt.stats("cpu")
    rt.delete("cpu", force=True)
    assert stats.cpu_nr_throttled > 0
    # 10% of one CPU over about a second: far below a free-running loop.
    assert 0 < stats.cpu_usage_ns < 400_000_000


# -- privileges ------------------------------------------------------------------


def test_default_capabilities_forbid_mount_and_sethostname(
        rt: Runtime, busybox_rootfs: Path) -> None:
    code, out = run(rt, "priv", config(
        busybox_rootfs, "sh", "-c",
        "mount -t tmpfs none /tmp && echo MOUNTED; hostname evil && echo RENAMED; "
        "grep NoNewPrivs /proc/self/status; echo timer_list=$(cat /proc/timer_list | wc -c); "
        "echo firmware=$(ls /sys/firmware | wc -l); "
        "echo 1 > /proc/sys/kernel/ns_last_pid && echo WROTE; echo done"))
    assert "MOUNTED" not in out and "RENAMED" not in out
    assert "timer_list=0" in out and "firmware=0" in out  # masked: empty
    assert Path("/proc/timer_list").read_text()  # while the host's is not
    assert "WROTE" not in out
    assert re.search(r"NoNewPrivs:\s+1", out)
    assert out.strip().endswith("done")


# -- lifecycle -------------------------------------------------------------------


def test_create_runs_no_user_code_until_start(rt: Runtime, busybox_rootfs: Path,
                                              tmp_dir: Path) -> None:
    shared = tmp_dir / "shared"
    shared.mkdir()
    data = default_config(["sh", "-c", "touch /shared/started"])
    data["root"]["path"] = str(busybox_rootfs)
    data["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared),
                           "options": ["rbind", "rw"]})
    state = rt.create("split", convert(data, busybox_rootfs).config)
    assert state.status is Status.CREATED
    assert rt.state("split").status is Status.CREATED
    # The init exists, in its own namespaces and cgroup, but has not exec'd.
    assert os.readlink(f"/proc/{state.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert str(state.pid) in Path(f"/proc/{state.pid}/cgroup").read_text() or \
        rt.ps("split") == [state.pid]
    time.sleep(0.2)
    assert not (shared / "started").exists()
    rt.start("split")
    wait_for(lambda: (shared / "started").exists())
    os.waitpid(state.pid, 0)
    assert rt.state("split").status is Status.STOPPED
    with pytest.raises(IllegalTransition, match="is stopped: cannot start"):
        rt.start("split")


def test_states_signals_and_exit_codes(rt: Runtime, busybox_rootfs: Path) -> None:
    assert run(rt, "code", config(busybox_rootfs, "sh", "-c", "exit 7"))[0] == 7
    # As PID 1 of its namespace the init gets only the signals it handles (and KILL):
    # wait until the trap is set before sending USR1.
    ready_r, ready_w = os.pipe()
    rt.create("sig", config(busybox_rootfs, "sh", "-c",
                            "trap 'exit 42' USR1; echo trapped; while true; do sleep 0.05; done"),
              stdio=(None, ready_w, None))
    os.close(ready_w)
    with pytest.raises(IllegalTransition):
        rt.pause("sig")  # created, not running
    state = rt.start("sig")
    assert os.read(ready_r, 64) == b"trapped\n"
    os.close(ready_r)
    assert rt.state("sig").status is Status.RUNNING
    with pytest.raises(IllegalTransition, match="is running: cannot start"):
        rt.start("sig")
    with pytest.raises(IllegalTransition, match="cannot delete"):
        rt.delete("sig")
    assert rt.state("sig").status is Status.RUNNING
    rt.kill("sig", signal.SIGUSR1)
    _, status = os.waitpid(state.pid, 0)
    assert os.WEXITSTATUS(status) == 42
    assert rt.state("sig").status is Status.STOPPED
    rt.delete("sig")
    rt.create("sig9", config(busybox_rootfs, "sleep", "60"))
    state = rt.start("sig9")
    rt.kill("sig9", signal.SIGKILL)
    _, status = os.waitpid(state.pid, 0)
    assert os.WTERMSIG(status) == signal.SIGKILL
    rt.delete("sig9")


def test_pause_and_resume(rt: Runtime, busybox_rootfs: Path) -> None:
    rt.create("frz", config(busybox_rootfs, "sleep", "60"))
    state = rt.start("frz")
    rt.pause("frz")
    assert rt.state("frz").status is Status.PAUSED
    rt.resume("frz")
    assert rt.state("frz").status is Status.RUNNING
    rt.kill("frz", signal.SIGKILL)
    os.waitpid(state.pid, 0)
    rt.delete("frz")


def test_exec_shares_the_pid_namespace(rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sleep", "60")
    rt.create("ex", cfg)
    state = rt.start("ex")
    r, w = os.pipe()
    script = "cat /proc/1/cmdline; echo; echo $$"
    pid = rt.exec("ex", cfg.process._replace(args=("sh", "-c", script)), stdio=(None, w, w))
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    lines = out.decode().split("\n")
    assert lines[0].replace("\0", " ").strip() == "sleep 60"
    assert int(lines[1]) > 1  # a new process in the container's PID namespace
    rt.delete("ex", force=True)
    _reap(state.pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_shim_logs_in_cri_format_and_outlives_its_caller(
        rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sh", "-c", "echo out-line; echo err-line >&2; exit 4")
    # The caller: a child process that spawns the shim and exits at once.
    caller = os.fork()
    if caller == 0:
        try:
            spawn_shim(rt, "logs", config=cfg)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(caller, 0)
    assert os.WEXITSTATUS(status) == 0
    wait_for(lambda: exit_record(rt, "logs") is not None)
    record = exit_record(rt, "logs")
    assert record is not None and record["exitCode"] == 4 and record["oomKilled"] is False
    log = (rt.store.dir("logs") / "container.log").read_text().splitlines()
    pattern = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) F (.*)$"
    parsed = sorted((m.group(1), m.group(2)) for m in (re.match(pattern, x) for x in log) if m)
    assert parsed == [("stderr", "err-line"), ("stdout", "out-line")]
    rt.delete("logs")


def test_delete_removes_state_and_cgroup(rt: Runtime, busybox_rootfs: Path) -> None:
    rt.create("gone", config(busybox_rootfs, "sleep", "60"))
    state = rt.start("gone")
    cgroup = rt.driver.cgroup(state.cgroup_path)
    assert cgroup.exists()
    rt.delete("gone", force=True)
    assert not cgroup.exists()
    assert not rt.store.root.joinpath("gone").exists()
    assert rt.containers() == []


# -- failures leave nothing ------------------------------------------------------


def test_missing_binary_fails_at_create_and_leaves_nothing(
        rt: Runtime, busybox_rootfs: Path) -> None:
    with pytest.raises(SetupError, match="exec: /nope: no such file or directory"):
        rt.create("nope", config(busybox_rootfs, "/nope"))
    with pytest.raises(SetupError, match='exec: "nope": executable file not found'):
        rt.create("nope", config(busybox_rootfs, "nope"))
    assert rt.containers() == []
    assert not rt.store.root.joinpath("nope").exists()
    assert not rt.driver.cgroup(f"{rt.cgroup_parent}/nope").exists()


def test_failed_mount_leaves_nothing(rt: Runtime, busybox_rootfs: Path) -> None:
    data = default_config(["true"])
    data["root"]["path"] = str(busybox_rootfs)
    data["mounts"].append({"destination": "/data", "type": "bind",
                           "source": "/nonexistent-podium-test", "options": ["rbind"]})
    with pytest.raises(SetupError, match="nonexistent-podium-test"):
        rt.create("badmount", convert(data, busybox_rootfs).config)
    assert rt.containers() == []
    assert not rt.driver.cgroup(f"{rt.cgroup_parent}/badmount").exists()


def test_a_namespace_the_init_cannot_join_fails_create_with_its_reason(
        rt: Runtime, busybox_rootfs: Path, tmp_path: Path) -> None:
    # The init fails (setns on a file that is no namespace) while the caller is still
    # making the cgroup: the error is the init's, not the cgroup's "no such process".
    not_a_namespace = tmp_path / "not-a-namespace"
    not_a_namespace.write_text("")
    data = default_config(["true"])
    data["root"]["path"] = str(busybox_rootfs)
    data["linux"]["namespaces"] = [
        {"type": "network", "path": str(not_a_namespace)} if ns["type"] == "network" else ns
        for ns in data["linux"]["namespaces"]]
    with pytest.raises(SetupError, match="setns.*Invalid argument"):
        rt.create("badns", convert(data, busybox_rootfs).config)
    assert rt.containers() == []
    assert not rt.driver.cgroup(f"{rt.cgroup_parent}/badns").exists()


def test_a_cgroup_the_kernel_refuses_fails_create_and_ends_the_init(
        rt: Runtime, busybox_rootfs: Path) -> None:
    # The cgroup is made after the init's fork: a limit the kernel refuses must end
    # the waiting init (the leak check fails the test on a stray process).
    cfg = config(busybox_rootfs, "true")
    cfg = cfg._replace(resources=cfg.resources._replace(
        cpu=Cpu(cpus=f"{os.cpu_count() or 1}-{(os.cpu_count() or 1) + 64}")))
    with pytest.raises(CgroupError, match="cpuset.cpus"):
        rt.create("badcpus", cfg)
    assert rt.containers() == []
    assert not rt.driver.cgroup(f"{rt.cgroup_parent}/badcpus").exists()


def test_duplicate_id_is_refused_and_the_first_kept(rt: Runtime, busybox_rootfs: Path) -> None:
    from runtime.errors import ContainerExistsError

    rt.create("dup", config(busybox_rootfs, "sleep", "60"))
    with pytest.raises(ContainerExistsError):
        rt.create("dup", config(busybox_rootfs, "true"))
    assert rt.state("dup").status is Status.CREATED
    rt.delete("dup", force=True)


def test_bad_config_is_refused_before_anything_is_made(rt: Runtime, busybox_rootfs: Path) -> None:
    data = default_config(["true"])
    data["root"]["path"] = str(busybox_rootfs)
    data["process"]["capabilities"]["bounding"].append("CAP_NOPE")
    with pytest.raises(ConfigError, match="CAP_NOPE"):
        rt.create("badcfg", convert(data, busybox_rootfs).config)
    assert not rt.store.root.joinpath("badcfg").exists()
    assert json.dumps(data)  # the input is untouched JSON


def test_fork_server_spawns_shims_for_a_threaded_caller(
        rt: Runtime, busybox_rootfs: Path) -> None:
    import threading

    from runtime.forkserver import ForkServer, ShimRequest

    server = ForkServer.start()
    try:
        results: list[object] = []
        stop = threading.Event()
        busy = threading.Thread(target=stop.wait)  # stands for gRPC's threads
        busy.start()

        def spawn() -> None:
            try:
                results.append(server.spawn_shim(ShimRequest(
                    rt.store.root, rt.cgroup_parent, "zyg",
                    config(busybox_rootfs, "sh", "-c", "echo from-zygote"))))
            except Exception as e:  # noqa: BLE001
                results.append(e)

        worker = threading.Thread(target=spawn)
        worker.start()
        worker.join(timeout=10)
        stop.set()
        busy.join()
        assert len(results) == 1 and not isinstance(results[0], Exception), results
        wait_for(lambda: exit_record(rt, "zyg") is not None)
        assert "stdout F from-zygote" in (rt.store.dir("zyg") / "container.log").read_text()
        with pytest.raises(SetupError, match="exec: /nope"):
            server.spawn_shim(ShimRequest(rt.store.root, rt.cgroup_parent, "zyg2",
                                          config(busybox_rootfs, "/nope")))
    finally:
        server.close()
    rt.delete("zyg")


def test_user_namespace_maps_root_to_an_unprivileged_host_id(
        rt: Runtime, busybox_rootfs: Path, tmp_dir: Path) -> None:
    os.chmod(tmp_dir, 0o755)  # the mapped root is no owner of the test's directory
    shared = tmp_dir / "userns"
    shared.mkdir()
    os.chmod(shared, 0o777)
    data = default_config(["sh", "-c", "id -u; cat /proc/self/uid_map; touch /home/user/made; "
                                       "echo $$"])
    data["root"]["path"] = str(busybox_rootfs)
    # An existing mount point: the mapped root may not create one in a host-owned rootfs.
    data["mounts"].append({"destination": "/home/user", "type": "bind", "source": str(shared),
                           "options": ["rbind", "rw"]})
    data["linux"]["namespaces"].append({"type": "user"})
    data["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    data["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    code, out = run(rt, "userns", convert(data, busybox_rootfs).config)
    assert code == 0, out
    lines = out.split("\n")
    assert lines[0] == "0"  # root inside
    assert lines[1].split() == ["0", "200000", "65536"]
    assert lines[2] == "1"  # and PID 1 of a PID namespace the user namespace owns
    made = shared / "made"
    assert made.stat().st_uid == 200000 and made.stat().st_gid == 200000


def test_process_runs_as_the_configured_user(rt: Runtime, busybox_rootfs: Path) -> None:
    data = default_config(["sh", "-c", "id -u; id -g; id -G; grep CapEff /proc/self/status"])
    data["root"]["path"] = str(busybox_rootfs)
    data["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [65534]}
    code, out = run(rt, "user", convert(data, busybox_rootfs).config)
    assert code == 0, out
    uid, gid, groups, caps = out.strip().split("\n")
    assert (uid, gid) == ("1000", "1000")
    assert set(groups.split()) == {"1000", "65534"}
    assert caps.split()[-1] == "0000000000000000"  # a non-root user keeps no capability
