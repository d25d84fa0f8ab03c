"""runtime.security without root: tables, parsing, user lookup, checks, and the order
of the identity/privilege calls (recorded by RecordingSecurityOps)."""

from __future__ import annotations

import errno
import resource
from pathlib import Path

import pytest

from runtime.errors import ConfigError, SetupError
from runtime.security import (
    RLIM64_INFINITY,
    RLIMITS,
    RecordingSecurityOps,
    apply_identity_and_privileges,
    apply_rlimits,
    capability_mask,
    capability_names,
    check_capability_names,
    check_rlimit,
    lookup_user,
    parse_capabilities,
    read_capabilities,
)
from runtime.spec.capabilities import CAPABILITIES
from runtime.spec.model import DEFAULT_CAPABILITIES, Capabilities, Process, Rlimit, User

# ------------------------------------------------------------------ rlimits


def test_rlimit_table_has_every_linux_limit() -> None:
    assert len(RLIMITS) == 16
    assert RLIMITS["RLIMIT_NOFILE"] == resource.RLIMIT_NOFILE
    assert RLIMITS["RLIMIT_NPROC"] == resource.RLIMIT_NPROC
    assert RLIMITS["RLIMIT_LOCKS"] == 10
    assert sorted(RLIMITS.values()) == list(range(16))


def test_apply_rlimits_calls_setrlimit_in_order() -> None:
    ops = RecordingSecurityOps()
    apply_rlimits([Rlimit("RLIMIT_NOFILE", 1024, 4096), Rlimit("RLIMIT_CORE", 0, 0)], ops)
    assert ops.calls == [
        ("setrlimit", resource.RLIMIT_NOFILE, 1024, 4096),
        ("setrlimit", resource.RLIMIT_CORE, 0, 0),
    ]


def test_apply_rlimits_failure_names_the_limit() -> None:
    ops = RecordingSecurityOps(fail_on={"setrlimit": errno.EPERM})
    with pytest.raises(SetupError, match=r"^setrlimit RLIMIT_NOFILE 1:2: Operation not permitted$"):
        apply_rlimits([Rlimit("RLIMIT_NOFILE", 1, 2)], ops)


def test_apply_rlimits_unknown_type() -> None:
    with pytest.raises(SetupError, match="RLIMIT_BOGUS: unknown"):
        apply_rlimits([Rlimit("RLIMIT_BOGUS", 1, 2)], RecordingSecurityOps())


@pytest.mark.parametrize(
    "limit",
    [
        Rlimit("RLIMIT_NOFILE", 1024, 4096),
        Rlimit("RLIMIT_NOFILE", 5, 5),
        Rlimit("RLIMIT_CORE", 0, RLIM64_INFINITY),
        Rlimit("RLIMIT_STACK", RLIM64_INFINITY, RLIM64_INFINITY),
        Rlimit("RLIMIT_AS", resource.RLIM_INFINITY, resource.RLIM_INFINITY),
    ],
)
def test_check_rlimit_accepts(limit: Rlimit) -> None:
    check_rlimit(limit, "process.rlimits[0]")


@pytest.mark.parametrize(
    ("limit", "problem"),
    [
        (Rlimit("RLIMIT_NOFILE", 4096, 1024), "soft limit 4096 is above the hard limit 1024"),
        (Rlimit("RLIMIT_CPU", RLIM64_INFINITY, 10), "soft limit"),
        (Rlimit("RLIMIT_CPU", resource.RLIM_INFINITY, 10), "soft limit"),
        (Rlimit("RLIMIT_FOO", 1, 2), "unknown rlimit type RLIMIT_FOO"),
        (Rlimit("NOFILE", 1, 2), "unknown rlimit type NOFILE"),
        (Rlimit("RLIMIT_NOFILE", -5, 2), "out of range"),
        (Rlimit("RLIMIT_NOFILE", 1, 2**64), "out of range"),
    ],
)
def test_check_rlimit_rejects(limit: Rlimit, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_rlimit(limit, "process.rlimits[3]")
    assert info.value.field == "process.rlimits[3]"
    assert problem in info.value.problem


# ------------------------------------------------------------------ capability names


def test_check_capability_names() -> None:
    check_capability_names(DEFAULT_CAPABILITIES, "process.capabilities.bounding")
    check_capability_names(CAPABILITIES, "process.capabilities.bounding")
    with pytest.raises(ConfigError) as info:
        check_capability_names(["CAP_CHOWN", "CAP_FOO"], "process.capabilities.effective")
    assert info.value.field == "process.capabilities.effective"
    assert info.value.problem == "unknown capability CAP_FOO"
    with pytest.raises(ConfigError, match="unknown capability chown"):
        check_capability_names(["chown"], "process.capabilities.effective")


def test_capability_mask_and_names_round_trip() -> None:
    mask = capability_mask(DEFAULT_CAPABILITIES, 40)
    assert mask == 0xA80425FB  # Docker's defaults, as /proc shows them in CapEff
    assert capability_names(mask) == frozenset(DEFAULT_CAPABILITIES)
    assert capability_names(0) == frozenset()
    assert capability_names(1 << 45) == frozenset({"CAP_UNKNOWN_45"})


def test_capability_mask_skips_caps_the_kernel_lacks() -> None:
    assert capability_mask(["CAP_CHECKPOINT_RESTORE", "CAP_CHOWN"], 39) == 1
    with pytest.raises(SetupError, match="^capability CAP_NOPE: unknown$"):
        capability_mask(["CAP_NOPE"], 40)


STATUS = """\
Name:\tcat
Umask:\t0022
State:\tR (running)
Uid:\t1000\t1000\t1000\t1000
CapInh:\t0000000000000000
CapPrm:\t0000000000000400
CapEff:\t0000000000000400
CapBnd:\t00000000a80425fb
CapAmb:\t0000000000000400
NoNewPrivs:\t1
"""


def test_parse_capabilities_from_proc_status() -> None:
    sets = parse_capabilities(STATUS)
    assert sets == {
        "inheritable": frozenset(),
        "permitted": frozenset({"CAP_NET_BIND_SERVICE"}),
        "effective": frozenset({"CAP_NET_BIND_SERVICE"}),
        "bounding": frozenset(DEFAULT_CAPABILITIES),
        "ambient": frozenset({"CAP_NET_BIND_SERVICE"}),
    }


def test_parse_capabilities_full_set() -> None:
    sets = parse_capabilities("CapBnd:\t000001ffffffffff\n")
    assert sets == {"bounding": frozenset(CAPABILITIES)}


def test_read_capabilities_of_this_process() -> None:
    sets = read_capabilities()
    assert set(sets) == {"inheritable", "permitted", "effective", "bounding", "ambient"}
    assert sets["effective"] <= sets["permitted"]


# ------------------------------------------------------------------ order of calls


def _bit(*names: str) -> int:
    return capability_mask(names, 40)


def test_order_of_identity_and_privilege_calls() -> None:
    caps = Capabilities(
        bounding=frozenset({"CAP_NET_BIND_SERVICE", "CAP_KILL"}),
        effective=frozenset({"CAP_NET_BIND_SERVICE"}),
        permitted=frozenset({"CAP_NET_BIND_SERVICE", "CAP_KILL"}),
        inheritable=frozenset({"CAP_NET_BIND_SERVICE"}),
        ambient=frozenset({"CAP_NET_BIND_SERVICE"}),
    )
    process = Process(
        args=("/bin/sh",),
        user=User(uid=1000, gid=1001, additional_gids=(2000, 3000), umask=0o027),
        capabilities=caps,
        no_new_privileges=True,
    )
    ops = RecordingSecurityOps(kernel_last_cap=40)
    apply_identity_and_privileges(process, ops)

    kept = {CAPABILITIES["CAP_NET_BIND_SERVICE"], CAPABILITIES["CAP_KILL"]}
    drops = [("capbset_drop", n) for n in range(41) if n not in kept]
    assert ops.calls == [
        *drops,
        ("set_keepcaps", True),
        ("setgroups", (2000, 3000)),
        ("setgid", 1001),
        ("setuid", 1000),
        ("umask", 0o027),
        ("capset", _bit("CAP_NET_BIND_SERVICE"), _bit("CAP_NET_BIND_SERVICE", "CAP_KILL"),
         _bit("CAP_NET_BIND_SERVICE")),
        ("ambient_clear_all",),
        ("ambient_raise", CAPABILITIES["CAP_NET_BIND_SERVICE"]),
        ("set_no_new_privs",),
    ]


def test_default_process_as_root() -> None:
    ops = RecordingSecurityOps(kernel_last_cap=40)
    apply_identity_and_privileges(Process(args=("/bin/sh",)), ops)
    names = ops.names()
    assert names.count("capbset_drop") == 41 - len(DEFAULT_CAPABILITIES)
    assert names[names.index("set_keepcaps"):] == [
        "set_keepcaps", "setgroups", "setgid", "setuid", "capset", "ambient_clear_all",
    ]
    default = _bit(*DEFAULT_CAPABILITIES)
    assert ("capset", default, default, 0) in ops.calls
    assert ("setgroups", ()) in ops.calls  # the caller's supplementary groups are cleared


def test_bounding_drops_stop_at_the_kernels_last_cap() -> None:
    ops = RecordingSecurityOps(kernel_last_cap=37)
    caps = Capabilities(bounding=frozenset({"CAP_CHOWN", "CAP_BPF"}),
                        effective=frozenset({"CAP_BPF"}), permitted=frozenset({"CAP_BPF"}))
    apply_identity_and_privileges(Process(args=("x",), capabilities=caps), ops)
    dropped = [c[1] for c in ops.calls if c[0] == "capbset_drop"]
    assert dropped == list(range(1, 38))
    assert ("capset", 0, 0, 0) in ops.calls  # CAP_BPF (39) is unknown to this kernel


def test_no_capabilities_leaves_them_alone() -> None:
    ops = RecordingSecurityOps()
    process = Process(args=("x",), user=User(uid=5, gid=6), capabilities=None)
    apply_identity_and_privileges(process, ops)
    assert ops.calls == [("setgroups", ()), ("setgid", 6), ("setuid", 5)]


def test_unknown_capability_changes_nothing() -> None:
    ops = RecordingSecurityOps()
    caps = Capabilities(ambient=frozenset({"CAP_MADE_UP"}))
    with pytest.raises(SetupError, match="^capability CAP_MADE_UP: unknown$"):
        apply_identity_and_privileges(Process(args=("x",), capabilities=caps), ops)
    assert ops.calls == []


def test_effective_outside_permitted_is_named() -> None:
    caps = Capabilities(effective=frozenset({"CAP_KILL", "CAP_CHOWN"}),
                        permitted=frozenset({"CAP_CHOWN"}))
    with pytest.raises(SetupError, match="^capset: effective CAP_KILL not in the permitted set$"):
        apply_identity_and_privileges(Process(args=("x",), capabilities=caps),
                                      RecordingSecurityOps())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("capbset_drop", "drop CAP_CHOWN from the bounding set: Operation not permitted"),
        ("set_keepcaps", "prctl PR_SET_KEEPCAPS: Operation not permitted"),
        ("setgroups", "setgroups 2000: Operation not permitted"),
        ("setgid", "setgid 1001: Operation not permitted"),
        ("setuid", "setuid 1000: Operation not permitted"),
        ("capset", "capset: Operation not permitted"),
        ("ambient_raise", "raise ambient capability CAP_NET_BIND_SERVICE: Operation not "
                          "permitted (an ambient capability must also be permitted and "
                          "inheritable)"),
        ("set_no_new_privs", "prctl PR_SET_NO_NEW_PRIVS: Operation not permitted"),
    ],
)
def test_failures_name_the_step(call: str, message: str) -> None:
    caps = Capabilities(
        bounding=frozenset({"CAP_NET_BIND_SERVICE"}),
        effective=frozenset({"CAP_NET_BIND_SERVICE"}),
        permitted=frozenset({"CAP_NET_BIND_SERVICE"}),
        inheritable=frozenset({"CAP_NET_BIND_SERVICE"}),
        ambient=frozenset({"CAP_NET_BIND_SERVICE"}),
    )
    process = Process(args=("x",), user=User(uid=1000, gid=1001, additional_gids=(2000,)),
                      capabilities=caps, no_new_privileges=True)
    ops = RecordingSecurityOps(fail_on={call: errno.EPERM})
    with pytest.raises(SetupError) as info:
        apply_identity_and_privileges(process, ops)
    assert str(info.value) == message
    assert ops.names()[-1] == call  # nothing after the failing step ran


def test_ambient_clear_failure_ignored_without_ambient_caps() -> None:
    ops = RecordingSecurityOps(fail_on={"ambient_clear_all": errno.EINVAL})
    apply_identity_and_privileges(Process(args=("x",)), ops)
    assert ops.names()[-1] == "ambient_clear_all"


# ------------------------------------------------------------------ users


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# a comment\n"
        "\n"
        "broken line\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
        "bob:x:1001:100::/home/bob:/bin/sh\n"
    )
    (etc / "group").write_text(
        "root:x:0:\n"
        "users:x:100:alice\n"
        "alice:x:1000:\n"
        "wheel:x:10:bob,alice\n"
        "audio:x:29:bob\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "user"),
    [
        ("root", User(0, 0, ())),
        ("0", User(0, 0, ())),
        ("alice", User(1000, 1000, (100, 10))),
        ("1000", User(1000, 1000, (100, 10))),
        ("bob", User(1001, 100, (10, 29))),
        ("alice:wheel", User(1000, 10, ())),
        ("alice:29", User(1000, 29, ())),
        ("1000:1000", User(1000, 1000, ())),
        ("4242", User(4242, 0, ())),
        ("4242:4343", User(4242, 4343, ())),
        ("4242:audio", User(4242, 29, ())),
    ],
)
def test_lookup_user(rootfs: Path, spec: str, user: User) -> None:
    assert lookup_user(rootfs, spec) == user


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mallory", "user mallory: not found in"),
        ("alice:nogroup", "group nogroup: not found in"),
        ("", "expected user, uid, user:group or uid:gid"),
        ("alice:", "expected user"),
        (":10", "expected user"),
        ("4294967295", "out of range"),
    ],
)
def test_lookup_user_errors(rootfs: Path, spec: str, message: str) -> None:
    with pytest.raises(SetupError, match=message):
        lookup_user(rootfs, spec)


def test_lookup_user_without_passwd(tmp_path: Path) -> None:
    assert lookup_user(tmp_path, "1000:1000") == User(1000, 1000, ())
    with pytest.raises(SetupError, match="user nobody: not found"):
        lookup_user(tmp_path, "nobody")


def test_lookup_user_follows_links_inside_the_rootfs(tmp_path: Path) -> None:
    real = tmp_path / "usr" / "share" / "base"
    real.mkdir(parents=True)
    (real / "passwd").write_text("carol:x:7:8::/:/bin/sh\n")
    (real / "group").write_text("staff:x:50:carol\n")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").symlink_to("/usr/share/base/passwd")  # absolute: rooted at the rootfs
    # ".." cannot climb above the rootfs, so this is the rootfs's own usr/share/base/group
    (etc / "group").symlink_to("../" * 12 + "usr/share/base/group")
    assert lookup_user(tmp_path, "carol") == User(7, 8, (50,))
    assert lookup_user(tmp_path, "carol:staff") == User(7, 50, ())


def test_lookup_user_never_reads_the_hosts_files(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").symlink_to("/usr/../../../etc/shadow")  # dangling inside the rootfs
    with pytest.raises(SetupError, match="user root: not found"):
        lookup_user(tmp_path, "root")


def test_lookup_user_link_loop(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").symlink_to("../etc/passwd")
    with pytest.raises(SetupError, match="too many levels of symbolic links"):
        lookup_user(tmp_path, "alice")
