"""runtime.security on the real kernel: a forked child drops to a container's identity
and privileges and reports what /proc and the kernel then say, as JSON over a pipe.

The changes are one-way, so each case runs in its own child, which always ends with
os._exit and is always waited for.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import SetupError
from runtime.security import (
    RLIM64_INFINITY,
    apply_identity_and_privileges,
    apply_rlimits,
    parse_capabilities,
    read_capabilities,
)
from runtime.spec.model import DEFAULT_CAPABILITIES, Capabilities, Process, Rlimit, User
from runtime.syscalls import CLONE_NEWNS, CLONE_NEWUTS, MS_PRIVATE, MS_REC, LinuxSyscalls
from tests.conftest import need, need_root

BUSYBOX = Path("/bin/busybox")
NET_BIND = frozenset({"CAP_NET_BIND_SERVICE"})

pytestmark = pytest.mark.root


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child and return what it returned (or its error)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            try:
                result = body()
            except BaseException as err:  # everything must reach the parent as data
                result = {"error": f"{type(err).__name__}: {err}"}
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(result))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    report: dict[str, Any] = json.loads(data)
    return report


def exec_in_child(process: Process, argv: list[str]) -> str:
    """Apply ``process`` in a forked child, exec ``argv`` there and return its stdout."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.dup2(write_end, 1)
            apply_rlimits(process.rlimits)
            apply_identity_and_privileges(process)
            os.execv(argv[0], argv)
        except BaseException as err:
            os.write(write_end, f"ERROR {type(err).__name__}: {err}".encode())
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end) as source:
        output = source.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output


def status_fields(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (ln.partition(":") for ln in text.splitlines())}


def docker_default(**changes: Any) -> Process:
    return Process(args=("/bin/true",), **changes)


@pytest.fixture(autouse=True)
def _root() -> None:
    need_root()


def test_docker_default_set_as_root() -> None:
    def body() -> dict[str, Any]:
        apply_identity_and_privileges(docker_default())
        caps = read_capabilities()
        return {k: sorted(v) for k, v in caps.items()} | {"ids": [os.getuid(), os.getgid()]}

    report = in_child(body)
    assert "error" not in report, report["error"]
    want = sorted(DEFAULT_CAPABILITIES)
    assert report["effective"] == want
    assert report["permitted"] == want
    assert report["bounding"] == want
    assert report["inheritable"] == []
    assert report["ambient"] == []
    assert report["ids"] == [0, 0]


def test_docker_default_survives_exec_as_root() -> None:
    need(BUSYBOX.exists(), "needs /bin/busybox (busybox-static)")
    output = exec_in_child(docker_default(), [str(BUSYBOX), "cat", "/proc/self/status"])
    caps = parse_capabilities(output)
    assert caps["effective"] == caps["permitted"] == caps["bounding"] == set(DEFAULT_CAPABILITIES)


def test_unprivileged_user_keeps_an_ambient_capability_across_exec() -> None:
    need(BUSYBOX.exists(), "needs /bin/busybox (busybox-static)")
    process = Process(
        args=(str(BUSYBOX),),
        user=User(uid=1000, gid=1000, additional_gids=(2000, 3000), umask=0o027),
        capabilities=Capabilities(
            bounding=NET_BIND, effective=NET_BIND, permitted=NET_BIND,
            inheritable=NET_BIND, ambient=NET_BIND,
        ),
    )
    output = exec_in_child(process, [str(BUSYBOX), "cat", "/proc/self/status"])
    fields = status_fields(output)
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1000"] * 4
    assert fields["Groups"].split() == ["2000", "3000"]
    assert fields["Umask"] == "0027"
    caps = parse_capabilities(output)
    assert caps["ambient"] == NET_BIND
    assert caps["effective"] == NET_BIND
    assert caps["permitted"] == NET_BIND
    assert caps["bounding"] == NET_BIND


def test_unprivileged_user_without_ambient_has_nothing_after_exec() -> None:
    need(BUSYBOX.exists(), "needs /bin/busybox (busybox-static)")
    process = Process(args=(str(BUSYBOX),), user=User(uid=1000, gid=1000))
    output = exec_in_child(process, [str(BUSYBOX), "cat", "/proc/self/status"])
    caps = parse_capabilities(output)
    assert caps["effective"] == caps["permitted"] == caps["ambient"] == frozenset()
    assert caps["bounding"] == set(DEFAULT_CAPABILITIES)
    assert status_fields(output)["Groups"] == ""


def test_no_new_privileges() -> None:
    need(BUSYBOX.exists(), "needs /bin/busybox (busybox-static)")
    process = docker_default(no_new_privileges=True)
    output = exec_in_child(process, [str(BUSYBOX), "cat", "/proc/self/status"])
    assert status_fields(output)["NoNewPrivs"] == "1"


def test_rlimits_applied() -> None:
    def body() -> dict[str, Any]:
        apply_rlimits([
            Rlimit("RLIMIT_NOFILE", 512, 2048),
            Rlimit("RLIMIT_CORE", 0, RLIM64_INFINITY),
        ])
        apply_identity_and_privileges(docker_default(user=User(uid=1000, gid=1000)))
        return {
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "core": resource.getrlimit(resource.RLIMIT_CORE),
        }

    report = in_child(body)
    assert "error" not in report, report["error"]
    assert report["nofile"] == [512, 2048]
    assert report["core"] == [0, resource.RLIM_INFINITY]


def test_rlimit_above_the_kernels_ceiling_is_a_setup_error() -> None:
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())

    def body() -> dict[str, Any]:
        apply_rlimits([Rlimit("RLIMIT_NOFILE", 1024, nr_open + 1)])
        return {}

    report = in_child(body)
    assert report["error"] == (
        f"SetupError: setrlimit RLIMIT_NOFILE 1024:{nr_open + 1}: Operation not permitted"
    )


def _try(call: Callable[[], None]) -> int:
    try:
        call()
    except OSError as err:
        return err.errno or -1
    return 0


def _admin_calls(capabilities: Capabilities, scratch: Path) -> dict[str, Any]:
    """In private UTS and mount namespaces (the host's are never touched), drop to
    ``capabilities`` and try sethostname and mount; report each call's errno."""
    sys = LinuxSyscalls()
    sys.unshare(CLONE_NEWUTS | CLONE_NEWNS)
    sys.mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back
    apply_identity_and_privileges(Process(args=("x",), capabilities=capabilities))
    return {
        "sethostname": _try(lambda: sys.sethostname("podium-sec-test")),
        "mount": _try(lambda: sys.mount("tmpfs", str(scratch), "tmpfs", 0, None)),
        "hostname": socket.gethostname(),
    }


def test_without_sys_admin_mount_and_sethostname_fail(tmp_dir: Path) -> None:
    host_name = socket.gethostname()
    report = in_child(lambda: _admin_calls(Capabilities(), tmp_dir))
    assert "error" not in report, report["error"]
    assert report["sethostname"] == errno.EPERM
    assert report["mount"] == errno.EPERM
    assert socket.gethostname() == host_name


def test_with_sys_admin_the_same_calls_succeed(tmp_dir: Path) -> None:
    # The control for the test above: the namespaces, not luck, keep the host safe.
    admin = frozenset(DEFAULT_CAPABILITIES) | {"CAP_SYS_ADMIN"}
    caps = Capabilities(bounding=admin, effective=admin, permitted=admin)
    host_name = socket.gethostname()
    report = in_child(lambda: _admin_calls(caps, tmp_dir))
    assert "error" not in report, report["error"]
    assert report == {"sethostname": 0, "mount": 0, "hostname": "podium-sec-test"}
    assert socket.gethostname() == host_name
    assert not os.path.ismount(tmp_dir)


def test_ambient_without_inheritable_is_refused() -> None:
    def body() -> dict[str, Any]:
        caps = Capabilities(bounding=NET_BIND, effective=NET_BIND, permitted=NET_BIND,
                            ambient=NET_BIND)
        apply_identity_and_privileges(Process(args=("x",), capabilities=caps))
        return {}

    report = in_child(body)
    assert report["error"].startswith(
        "SetupError: raise ambient capability CAP_NET_BIND_SERVICE: Operation not permitted"
    )


def test_an_unprivileged_process_cannot_become_root_again() -> None:
    def body() -> dict[str, Any]:
        apply_identity_and_privileges(Process(args=("x",), user=User(1000, 1000),
                                              capabilities=None))
        try:
            apply_identity_and_privileges(Process(args=("x",), capabilities=None))
        except SetupError as err:
            return {"message": str(err), "uid": os.getuid()}
        return {"uid": os.getuid()}

    report = in_child(body)
    assert report == {"message": "setgroups (none): Operation not permitted", "uid": 1000}
