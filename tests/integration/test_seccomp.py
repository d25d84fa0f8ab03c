"""linux.seccomp on the real kernel: denied calls, argument filters, allow-lists,
podium's default profile, and the same filter for processes ``exec`` adds."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Runtime
from runtime.errors import SetupError
from runtime.seccomp import to_oci
from runtime.seccomp_default import default_profile
from runtime.spec import ContainerConfig, convert, default_config
from runtime.spec.model import IDMapping, Namespace, Process
from tests.support.containers import run_to_completion as run

ALLOW, ERRNO = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"


def config(rootfs: Path, script: str, seccomp: dict[str, Any], *,
           no_new_privileges: bool = True) -> ContainerConfig:
    data = default_config(["sh", "-c", script])
    data["root"]["path"] = str(rootfs)
    data["process"]["noNewPrivileges"] = no_new_privileges
    data["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    data["linux"]["seccomp"] = seccomp
    return convert(data, rootfs).config



def deny_mkdir(errno_ret: int = 1) -> dict[str, Any]:
    return {"defaultAction": ALLOW,
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": ERRNO,
                          "errnoRet": errno_ret}]}


def seccomp_mode(status: str) -> str:
    return next(line.split()[1] for line in status.splitlines()
                if line.startswith("Seccomp:"))


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_a_denied_call_fails_with_its_errno(rt: Runtime, busybox_rootfs: Path,
                                            no_new_privileges: bool) -> None:
    # Without no_new_privs the filter goes in before the privileges are dropped:
    # both ways must end with the same filter on the process.
    code, out = run(rt, "sc-mkdir", config(
        busybox_rootfs, "touch /tmp/f && echo touched; mkdir /tmp/x; "
        "grep Seccomp: /proc/self/status; grep NoNewPrivs /proc/self/status",
        deny_mkdir(), no_new_privileges=no_new_privileges))
    assert "touched" in out
    assert "Operation not permitted" in out, out
    assert seccomp_mode(out) == "2", out  # filter mode
    assert f"NoNewPrivs:\t{int(no_new_privileges)}" in out  # podium never sets it itself


def test_errno_ret_is_the_configured_one(rt: Runtime, busybox_rootfs: Path) -> None:
    code, out = run(rt, "sc-errno", config(busybox_rootfs, "mkdir /tmp/x",
                                           deny_mkdir(errno_ret=13)))
    assert code != 0
    assert "Permission denied" in out, out


def test_argument_filter_denies_only_the_matching_calls(rt: Runtime,
                                                        busybox_rootfs: Path) -> None:
    # personality() is refused unless it only asks (0xffffffff); socket() is refused
    # for AF_INET (2) alone, so an AF_INET6 socket still gets as far as connect.
    profile = {"defaultAction": ALLOW, "syscalls": [
        {"names": ["personality"], "action": ERRNO,
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"}]},
        {"names": ["socket"], "action": ERRNO, "errnoRet": 13,
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
    ]}
    code, out = run(rt, "sc-args", config(
        busybox_rootfs, "linux32 true; echo linux32=$?; nc 127.0.0.1 1 </dev/null; "
        "nc ::1 1 </dev/null", profile))
    lines = out.splitlines()
    assert "linux32=1" in lines, out
    assert "personality" in lines[0] and "Operation not permitted" in lines[0], out
    assert lines[2] == "nc: socket: Permission denied", out
    assert "socket" not in lines[3] and "Permission denied" not in lines[3], out


def test_an_allow_list_runs_echo(rt: Runtime, busybox_rootfs: Path) -> None:
    allowed = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
               "prlimit64", "mmap", "munmap", "mprotect", "getpid", "getppid", "getuid",
               "geteuid", "getgid", "getegid", "rt_sigaction", "rt_sigprocmask",
               "rt_sigreturn", "uname", "write", "writev", "exit", "exit_group", "ioctl",
               "fcntl", "read", "close", "newfstatat", "fstat", "stat", "getcwd",
               "readlink", "access", "openat", "open", "dup2", "getrandom", "sigaltstack"]
    profile = {"defaultAction": ERRNO, "defaultErrnoRet": 1,
               "syscalls": [{"names": allowed, "action": ALLOW}]}
    code, out = run(rt, "sc-echo", config(busybox_rootfs, "echo hello; mkdir /tmp/x",
                                          profile))
    assert "hello" in out, out
    assert "Operation not permitted" in out, out


def test_default_profile_runs_a_shell_and_denies_unshare(rt: Runtime,
                                                         busybox_rootfs: Path) -> None:
    profile = to_oci(default_profile())
    for nnp in (True, False):
        code, out = run(rt, f"sc-default-{int(nnp)}", config(
            busybox_rootfs, "echo ok; ls /; unshare -U true; echo unshare=$?", profile,
            no_new_privileges=nnp))
        assert out.startswith("ok\n"), out
        assert "proc" in out and "bin" in out
        assert "unshare=1" in out, out
        assert "Operation not permitted" in out, out


def test_exec_applies_the_containers_profile(rt: Runtime, busybox_rootfs: Path) -> None:
    cfg = config(busybox_rootfs, "sleep 30", deny_mkdir())
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        rt.create("sc-exec", cfg, stdio=(devnull, devnull, devnull))
    finally:
        os.close(devnull)
    state = rt.start("sc-exec")
    r, w = os.pipe()
    try:
        pid = rt.exec("sc-exec", Process(args=("sh", "-c", "mkdir /tmp/y; "
                                               "grep Seccomp: /proc/self/status")),
                      stdio=(None, w, w))
    finally:
        os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    rt.kill("sc-exec", 9)
    os.waitpid(state.pid, 0)
    rt.delete("sc-exec")
    text = out.decode()
    assert "Operation not permitted" in text, text
    assert seccomp_mode(text) == "2"


def test_without_privilege_to_load_it_the_error_says_why(rt: Runtime,
                                                         busybox_rootfs: Path) -> None:
    # A filter loaded before the privilege drop must let the runtime finish: one
    # that refuses capset makes create fail with the call's name, not hang.
    profile = {"defaultAction": ALLOW,
               "syscalls": [{"names": ["capset"], "action": ERRNO}]}
    cfg = config(busybox_rootfs, "true", profile, no_new_privileges=False)
    start = time.monotonic()
    with pytest.raises(SetupError, match="capset"):
        rt.create("sc-early", cfg)
    assert time.monotonic() - start < 10


def test_in_a_user_namespace(rt: Runtime, busybox_rootfs: Path) -> None:
    # Two forks: the init is built in a new user namespace and owns no host privilege.
    cfg = config(busybox_rootfs, "mkdir /tmp/x; grep Seccomp: /proc/self/status",
                 deny_mkdir(), no_new_privileges=False)
    cfg = cfg._replace(
        namespaces=(*cfg.namespaces, Namespace(type="user")),
        uid_mappings=(IDMapping(container_id=0, host_id=200000, size=65536),),
        gid_mappings=(IDMapping(container_id=0, host_id=200000, size=65536),))
    code, out = run(rt, "sc-userns", cfg)
    assert "Operation not permitted" in out, out
    assert seccomp_mode(out) == "2"
