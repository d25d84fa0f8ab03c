"""linux.seccomp without the kernel: conversion, validation, the libseccomp mapping,
and podium's default profile built into a filter object (never loaded)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from runtime import seccomp
from runtime.cli.features import features
from runtime.errors import ConfigError
from runtime.seccomp_default import CLONE_NAMESPACE_FLAGS, default_profile
from runtime.spec import convert, default_config, validate
from runtime.spec.convert import convert_seccomp
from runtime.spec.model import (
    Capabilities,
    ContainerConfig,
    Process,
    Seccomp,
    SeccompArg,
    SeccompSyscall,
)

ALLOW, ERRNO = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"


def config_with(profile: dict[str, Any] | None) -> tuple[ContainerConfig, tuple[str, ...]]:
    data = default_config(["true"])
    data["root"]["path"] = "/"
    if profile is not None:
        data["linux"]["seccomp"] = profile
    converted = convert(data, Path("/"))
    return converted.config, converted.warnings


def pfc(profile: Seccomp) -> str:
    """The filter libseccomp would load, in its readable form."""
    ctx = seccomp.build_context(profile)
    with tempfile.TemporaryFile("w+") as f:
        ctx.export_pfc(f)
        f.seek(0)
        return f.read()


# -- conversion --------------------------------------------------------------------


def test_a_full_profile_converts() -> None:
    config, warnings = config_with({
        "defaultAction": ERRNO, "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": ALLOW},
            {"names": ["personality"], "action": ALLOW,
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": ALLOW,
             "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["mkdir"], "action": ERRNO, "errnoRet": 13},
        ]})
    assert config.seccomp == Seccomp(
        default_action=ERRNO, default_errno_ret=38,
        architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86"), flags=("SECCOMP_FILTER_FLAG_LOG",),
        syscalls=(
            SeccompSyscall(names=("read", "write"), action=ALLOW),
            SeccompSyscall(names=("personality",), action=ALLOW,
                           args=(SeccompArg(argument=0, value=8, op="SCMP_CMP_EQ"),)),
            SeccompSyscall(names=("clone",), action=ALLOW,
                           args=(SeccompArg(argument=0, value=0x7E020000,
                                            op="SCMP_CMP_MASKED_EQ", value_two=0),)),
            SeccompSyscall(names=("mkdir",), action=ERRNO, errno_ret=13),
        ))
    assert warnings == ()
    validate(config)


@pytest.mark.parametrize("profile", [None, {}])
def test_no_profile_is_no_seccomp(profile: dict[str, Any] | None) -> None:
    config, _ = config_with(profile)
    assert config.seccomp is None


@pytest.mark.parametrize("profile, field", [
    ({"syscalls": []}, "linux.seccomp.defaultAction"),
    ({"defaultAction": 3}, "linux.seccomp.defaultAction"),
    ({"defaultAction": ALLOW, "syscalls": [{"names": ["read"]}]},
     "linux.seccomp.syscalls[0].action"),
    ({"defaultAction": ALLOW, "syscalls": [{"names": "read", "action": ERRNO}]},
     "linux.seccomp.syscalls[0].names"),
    ({"defaultAction": ALLOW, "syscalls": [{"names": ["read"], "action": ERRNO,
                                            "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value"),
    ({"defaultAction": ALLOW, "listenerPath": "/run/agent.sock"},
     "linux.seccomp.listenerPath"),
])
def test_conversion_errors_name_the_field(profile: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_with(profile)
    assert e.value.field == field


def test_unknown_system_calls_are_warnings() -> None:
    _, warnings = config_with({"defaultAction": ALLOW, "syscalls": [
        {"names": ["read", "no_such_call"], "action": ERRNO}]})
    assert warnings == ("linux.seccomp.syscalls[0].names: 'no_such_call' is not a system call "
                        "libseccomp knows here, skipped",)


def test_a_profile_round_trips_through_its_oci_form() -> None:
    profile = default_profile()
    assert convert_seccomp(seccomp.to_oci(profile)) == profile


def test_the_profile_kept_for_exec(tmp_path: Path) -> None:
    assert seccomp.load_profile(tmp_path) is None
    profile = default_profile()
    seccomp.save_profile(tmp_path, profile)
    assert seccomp.load_profile(tmp_path) == profile


# -- validation --------------------------------------------------------------------


def _rule(**changes: Any) -> dict[str, Any]:
    return {"names": ["mkdir"], "action": ERRNO, **changes}


@pytest.mark.parametrize("profile, field, message", [
    ({"defaultAction": "SCMP_ACT_NOPE"}, "linux.seccomp.defaultAction", "unknown action"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction", "listenerPath"),
    ({"defaultAction": ALLOW, "defaultErrnoRet": 1}, "linux.seccomp.defaultErrnoRet",
     "returns no errno"),
    ({"defaultAction": ERRNO, "defaultErrnoRet": 5000}, "linux.seccomp.defaultErrnoRet",
     "not an errno"),
    ({"defaultAction": ALLOW, "architectures": ["SCMP_ARCH_Z80"]},
     "linux.seccomp.architectures[0]", "unknown architecture"),
    ({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_NOPE"]},
     "linux.seccomp.flags[0]", "unknown flag"),
    ({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "linux.seccomp.flags[0]", "not supported"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(names=[])]},
     "linux.seccomp.syscalls[0].names", "at least one"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(), _rule(action="SCMP_ACT_NOTIFY")]},
     "linux.seccomp.syscalls[1].action", "listenerPath"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(action="SCMP_ACT_KILL_ALL")]},
     "linux.seccomp.syscalls[0].action", "unknown action"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(action="SCMP_ACT_TRAP", errnoRet=1)]},
     "linux.seccomp.syscalls[0].errnoRet", "returns no errno"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(args=[
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
        {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}])]},
     "linux.seccomp.syscalls[0].args[1].index", "0 to 5"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(args=[
        {"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}])]},
     "linux.seccomp.syscalls[0].args[0].op", "unknown operator"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(args=[
        {"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}])]},
     "linux.seccomp.syscalls[0].args[0].value", "uint64"),
    ({"defaultAction": ALLOW, "syscalls": [_rule(args=[
        {"index": 0, "value": 1, "valueTwo": -1, "op": "SCMP_CMP_MASKED_EQ"}])]},
     "linux.seccomp.syscalls[0].args[0].valueTwo", "uint64"),
])
def test_validation_names_the_field(profile: dict[str, Any], field: str, message: str) -> None:
    config, _ = config_with(profile)
    with pytest.raises(ConfigError, match=message) as e:
        validate(config)
    assert e.value.field == field


def test_every_action_errno_and_trace_take_errnos() -> None:
    for action in seccomp.ACTIONS:
        errno_ret = 5 if action in seccomp.ERRNO_ACTIONS else None
        config, _ = config_with({"defaultAction": ALLOW, "syscalls": [
            _rule(action=action, **({} if errno_ret is None else {"errnoRet": errno_ret}))]})
        validate(config)
        seccomp.build_context(config.seccomp)  # type: ignore[arg-type]


# -- the libseccomp mapping --------------------------------------------------------


def test_every_architecture_maps_to_libseccomp() -> None:
    b = seccomp.binding()
    values = {name: getattr(b.Arch, attr) for name, attr in seccomp.ARCHITECTURES.items()}
    assert len(set(values.values())) == len(values)  # no two names alike
    assert values["SCMP_ARCH_X86_64"] == 0xC000003E  # AUDIT_ARCH_X86_64
    assert values["SCMP_ARCH_AARCH64"] == 0xC00000B7


def test_architectures_are_added_to_the_filter() -> None:
    b = seccomp.binding()
    ctx = seccomp.build_context(Seccomp(default_action=ALLOW, architectures=(
        "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64")))
    for arch in (b.Arch.X86, b.Arch.X32, b.Arch.AARCH64):
        assert ctx.exist_arch(arch)
    assert not ctx.exist_arch(b.Arch.S390X)


def test_actions_operators_and_flags_map_to_libseccomp() -> None:
    b = seccomp.binding()
    assert seccomp.action_value(ERRNO, None, "x") == b.ERRNO(1)  # EPERM by default
    assert seccomp.action_value(ERRNO, 38, "x") == b.ERRNO(38)
    assert seccomp.action_value("SCMP_ACT_TRACE", 7, "x") == b.TRACE(7)
    assert seccomp.action_value("SCMP_ACT_KILL", None, "x") == b.KILL_THREAD
    assert seccomp.action_value("SCMP_ACT_KILL_PROCESS", None, "x") == b.KILL_PROCESS
    for op in seccomp.OPERATORS.values():
        assert isinstance(getattr(b, op), int)
    ctx = seccomp.build_context(Seccomp(default_action=ALLOW, flags=tuple(seccomp.FLAGS)))
    assert ctx.get_attr(b.Attr.CTL_TSYNC) == 1
    assert ctx.get_attr(b.Attr.CTL_NNP) == 0  # podium never lets libseccomp set it


def test_the_filter_holds_the_rules() -> None:
    text = pfc(Seccomp(default_action=ALLOW, syscalls=(
        SeccompSyscall(names=("mkdir",), action=ERRNO, errno_ret=13),
        # Two comparisons of one argument: alternatives, one rule each.
        SeccompSyscall(names=("personality",), action=ERRNO, args=(
            SeccompArg(argument=0, value=8, op="SCMP_CMP_EQ"),
            SeccompArg(argument=0, value=0x20008, op="SCMP_CMP_EQ"))),
        # A rule with the default action changes nothing and is left out.
        SeccompSyscall(names=("read",), action=ALLOW),
        SeccompSyscall(names=("no_such_call",), action=ERRNO),
    )))
    assert "action ERRNO(13)" in text
    assert "if ($a0.lo32 == 8)" in text and "if ($a0.lo32 == 131080)" in text
    assert '"read"' not in text


def test_an_unknown_operator_in_a_built_filter_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        seccomp.build_context(Seccomp(default_action=ALLOW, syscalls=(
            SeccompSyscall(names=("read",), action=ERRNO, args=(
                SeccompArg(argument=0, value=1, op="SCMP_CMP_NOPE"),)),)))
    assert e.value.field == "linux.seccomp.syscalls[0].args[0].op"


# -- when the filter is loaded -----------------------------------------------------


@pytest.mark.parametrize("process, early", [
    (Process(args=("x",), no_new_privileges=True), False),
    (Process(args=("x",)), True),  # Docker's default set: no CAP_SYS_ADMIN
    (Process(args=("x",), capabilities=Capabilities(
        effective=frozenset({"CAP_SYS_ADMIN"}), permitted=frozenset({"CAP_SYS_ADMIN"}))), False),
    (Process(args=("x",), capabilities=None), False),  # kept as they are: root keeps all
])
def test_loaded_early_only_without_nnp_or_sys_admin(process: Process, early: bool) -> None:
    assert seccomp.needs_privilege_to_load(process) is early
    assert seccomp.compile_filter(Seccomp(default_action=ALLOW), process).early is early


def test_no_profile_costs_nothing() -> None:
    # A container without seccomp must not import the binding (nor libseccomp).
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import runtime.init, runtime.exec, runtime.api\n"
        "from runtime.spec import convert, default_config, validate\n"
        "data = default_config(['true']); data['root']['path'] = '/'\n"
        "config = convert(data, Path('/')).config\n"
        "validate(config)\n"
        "from runtime.seccomp import compile_filter\n"
        "f = compile_filter(config.seccomp, config.process)\n"
        "f.load_before_privileges_drop(); f.load_before_exec()\n"
        "assert 'pyseccomp' not in sys.modules, 'binding imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# -- the default profile -----------------------------------------------------------


def test_default_profile_validates_and_builds() -> None:
    profile = default_profile()
    config, _ = config_with(seccomp.to_oci(profile))
    assert config.seccomp == profile
    validate(config)
    assert seccomp.unknown_syscalls(profile) == []  # every name known on this machine
    text = pfc(profile)
    assert f"& 0x{CLONE_NAMESPACE_FLAGS:08x} == 0" in text  # clone without namespaces
    assert "ERRNO(38)" in text  # clone3: ENOSYS, so the C library falls back to clone


def test_default_profile_leaves_out_what_a_container_must_not_do() -> None:
    allowed = {name for rule in default_profile().syscalls if rule.action == ALLOW
               for name in rule.names}
    for name in ("unshare", "setns", "mount", "umount2", "pivot_root", "init_module",
                 "kexec_load", "reboot", "bpf", "perf_event_open", "keyctl", "add_key",
                 "swapon", "settimeofday", "open_by_handle_at", "userfaultfd",
                 "io_uring_setup", "acct"):
        assert name not in allowed, name
    for name in ("read", "write", "execve", "mkdir", "socketpair", "futex", "wait4"):
        assert name in allowed, name


@pytest.mark.parametrize("machine, first", [
    ("x86_64", "SCMP_ARCH_X86_64"), ("aarch64", "SCMP_ARCH_AARCH64"), ("s390x", "SCMP_ARCH_S390X"),
])
def test_default_profile_per_machine(machine: str, first: str) -> None:
    profile = default_profile(machine)
    assert profile.architectures[0] == first
    clone = next(r for r in profile.syscalls if r.names == ("clone",))
    assert clone.args[0].argument == (1 if machine == "s390x" else 0)


def test_features_list_seccomp() -> None:
    s = features()["linux"]["seccomp"]
    assert s["enabled"] is True
    assert "SCMP_ACT_ERRNO" in s["actions"] and "SCMP_ACT_NOTIFY" not in s["actions"]
    assert "SCMP_CMP_MASKED_EQ" in s["operators"]
    assert "SCMP_ARCH_X86_64" in s["archs"]
    assert "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in s["knownFlags"]
    assert "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" not in s["supportedFlags"]
