"""``linux.seccomp``: a profile compiled into a libseccomp filter and loaded into the
kernel just before the container's process execs.

The binding is pyseccomp (ctypes over the host's libseccomp, with the API of
libseccomp's own Python module). It is imported only when a profile is set, so a
container without one never pays for it. Importing it must happen before the init
pivots into the container's root (after that, neither the module nor the library
can be found): ``check_seccomp`` imports it in the caller, before the fork.

When to load. The kernel accepts a filter only from a process that has
no_new_privs set or holds CAP_SYS_ADMIN. Loading as late as possible means the
filter need not allow the runtime's own set-up calls, so ``Filter`` loads:

- just before ``execve``, when the process will have no_new_privs
  (``noNewPrivileges``) or keep CAP_SYS_ADMIN;
- otherwise just before the process drops its privileges (as runc and crun do),
  while it still holds CAP_SYS_ADMIN. The filter then also sees the runtime's last
  calls: setgroups, setresgid, setresuid, capset, prctl, write, openat, close,
  execve. Docker's default profile allows them all.

podium never lets libseccomp set no_new_privs itself: that is the config's choice.

Names follow the OCI spec (libseccomp's own: ``SCMP_ACT_ERRNO``,
``SCMP_ARCH_X86_64``, ``SCMP_CMP_MASKED_EQ``). A system call name that libseccomp
does not know on this machine is skipped (profiles such as Docker's list calls of
every architecture and of newer kernels); ``convert`` reports them as warnings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError, SetupError
from runtime.spec.model import Process, Seccomp, SeccompArg

# OCI action name -> the binding's constant (ERRNO and TRACE are functions of an errno).
ACTIONS: dict[str, str] = {
    "SCMP_ACT_KILL": "KILL",
    "SCMP_ACT_KILL_THREAD": "KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS": "KILL_PROCESS",
    "SCMP_ACT_TRAP": "TRAP",
    "SCMP_ACT_ERRNO": "ERRNO",
    "SCMP_ACT_TRACE": "TRACE",
    "SCMP_ACT_ALLOW": "ALLOW",
    "SCMP_ACT_LOG": "LOG",
}
ERRNO_ACTIONS = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})
# Known to the spec; it needs a seccomp agent listening on listenerPath.
NOTIFY = "SCMP_ACT_NOTIFY"

OPERATORS: dict[str, str] = {
    "SCMP_CMP_NE": "NE",
    "SCMP_CMP_LT": "LT",
    "SCMP_CMP_LE": "LE",
    "SCMP_CMP_EQ": "EQ",
    "SCMP_CMP_GE": "GE",
    "SCMP_CMP_GT": "GT",
    "SCMP_CMP_MASKED_EQ": "MASKED_EQ",
}

ARCHITECTURES: dict[str, str] = {
    f"SCMP_ARCH_{name}": name
    for name in ("X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32",
                 "MIPSEL", "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390",
                 "S390X", "PARISC", "PARISC64", "RISCV64")
}

# seccomp(2) flag -> the libseccomp filter attribute that sets it.
FLAGS: dict[str, str] = {
    "SECCOMP_FILTER_FLAG_TSYNC": "CTL_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG": "CTL_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": "CTL_SSB",
}
# Known to the spec, but libseccomp 2.5 (Debian 12's) has no attribute for it.
UNSUPPORTED_FLAGS = frozenset({"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"})

MAX_ERRNO = 4095
MAX_ARGS = 6
_UINT64 = (1 << 64) - 1
_EPERM = 1
_NR_SCMP_ERROR = -1  # what libseccomp answers for a name it does not know

# The container's profile, kept in its state directory for ``exec``.
PROFILE_FILE = "seccomp.json"


def binding() -> Any:
    """The libseccomp binding, imported on first use."""
    try:
        import pyseccomp  # type: ignore[import-untyped]  # ships no type hints
    except (ImportError, RuntimeError) as e:  # RuntimeError: libseccomp itself is missing
        raise ConfigError("linux.seccomp", f"needs libseccomp and its Python binding "
                                           f"pyseccomp: {e}") from None
    return pyseccomp


def action_value(action: str, errno_ret: int | None, where: str) -> int:
    """The libseccomp action for an OCI action name (checked by ``check_seccomp``)."""
    b = binding()
    if action not in ACTIONS:
        raise ConfigError(where, f"unknown action {action!r}")
    constant = getattr(b, ACTIONS[action])
    if action in ERRNO_ACTIONS:
        return int(constant(_EPERM if errno_ret is None else errno_ret))
    return int(constant)


def syscall_number(name: str) -> int | None:
    """The native number libseccomp gives ``name`` (negative for a call that exists
    only on another architecture of the filter), or None if it does not know it."""
    number = int(binding().resolve_syscall(binding().Arch.NATIVE, name))
    return None if number == _NR_SCMP_ERROR else number


def unknown_syscalls(profile: Seccomp) -> list[str]:
    """One warning per system call name that this machine's libseccomp does not know."""
    return [f"linux.seccomp.syscalls[{i}].names: {name!r} is not a system call libseccomp "
            "knows here, skipped"
            for i, rule in enumerate(profile.syscalls) for name in rule.names
            if syscall_number(name) is None]


def needs_privilege_to_load(process: Process) -> bool:
    """True when the process will have neither no_new_privs nor CAP_SYS_ADMIN once it
    drops its privileges, so the filter must be loaded before that."""
    caps = process.capabilities
    return not process.no_new_privileges and (
        caps is not None and "CAP_SYS_ADMIN" not in caps.effective)


class Filter:
    """A compiled filter (or none), loaded once at the point the kernel allows."""

    def __init__(self, context: Any, early: bool) -> None:
        self.context = context
        self.early = early
        self.loaded = context is None

    def load_before_privileges_drop(self) -> None:
        if self.early:
            self._load()

    def load_before_exec(self) -> None:
        self._load()

    def _load(self) -> None:
        if self.loaded:
            return
        try:
            self.context.load()
        except OSError as e:
            hint = (" (the kernel wants no_new_privs or CAP_SYS_ADMIN)"
                    if e.errno == 13 else "")
            raise SetupError(f"seccomp: load the filter: {e.strerror}{hint}") from None
        self.loaded = True


NO_FILTER = Filter(None, early=False)


def compile_filter(profile: Seccomp | None, process: Process) -> Filter:
    """Build ``profile``'s filter in libseccomp (nothing is applied yet); ``NO_FILTER``
    without a profile, without importing the binding."""
    if profile is None:
        return NO_FILTER
    return Filter(build_context(profile), early=needs_privilege_to_load(process))


def build_context(profile: Seccomp) -> Any:
    """The libseccomp filter object for ``profile``; errors name the field."""
    b = binding()
    where = "linux.seccomp"
    default = action_value(profile.default_action, profile.default_errno_ret,
                           f"{where}.defaultAction")
    try:
        ctx = b.SyscallFilter(default)
    except OSError as e:
        raise SetupError(f"{where}.defaultAction: libseccomp refused "
                         f"{profile.default_action}: {e.strerror}") from None
    # no_new_privs is the config's business (noNewPrivileges), never a side effect.
    ctx.set_attr(b.Attr.CTL_NNP, 0)
    for i, arch in enumerate(profile.architectures):
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{where}.architectures[{i}]", f"unknown architecture {arch!r}")
        value = getattr(b.Arch, ARCHITECTURES[arch])
        try:
            if not ctx.exist_arch(value):
                ctx.add_arch(value)
        except OSError as e:
            raise SetupError(f"{where}.architectures[{i}]: libseccomp refused {arch}: "
                             f"{e.strerror}") from None
    for i, flag in enumerate(profile.flags):
        if flag not in FLAGS:
            raise ConfigError(f"{where}.flags[{i}]", f"{flag} is not supported by podium")
        try:
            ctx.set_attr(getattr(b.Attr, FLAGS[flag]), 1)
        except OSError as e:
            raise SetupError(f"{where}.flags[{i}]: libseccomp cannot set {flag} here: "
                             f"{e.strerror}") from None
    for i, rule in enumerate(profile.syscalls):
        rule_where = f"{where}.syscalls[{i}]"
        action = action_value(rule.action, rule.errno_ret, f"{rule_where}.action")
        if action == default:
            continue  # libseccomp refuses a rule that only restates the default
        conditions = [_condition(b, a, f"{rule_where}.args[{j}]")
                      for j, a in enumerate(rule.args)]
        # Two comparisons of the same argument cannot both hold in one libseccomp
        # rule; like runc, read them as alternatives: one rule each.
        indices = [a.argument for a in rule.args]
        groups = ([[c] for c in conditions] if len(set(indices)) < len(indices)
                  else [conditions])
        for name in rule.names:
            number = syscall_number(name)
            if number is None:
                continue
            for group in groups:
                try:
                    ctx.add_rule(action, number, *group)
                except OSError as e:
                    raise SetupError(f"{rule_where}: libseccomp refused the rule for "
                                     f"{name}: {e.strerror}") from None
    return ctx


def _condition(b: Any, arg: SeccompArg, where: str) -> Any:
    if arg.op not in OPERATORS:
        raise ConfigError(f"{where}.op", f"unknown operator {arg.op!r}")
    return b.Arg(arg.argument, getattr(b, OPERATORS[arg.op]), arg.value, arg.value_two)


def load_filter(profile: Seccomp) -> None:
    """Compile and load ``profile`` now, into the calling process (and its children)."""
    ctx = build_context(profile)
    try:
        ctx.load()
    except OSError as e:
        raise SetupError(f"seccomp: load the filter: {e.strerror}") from None


# -- the profile on disk: the OCI form ------------------------------------------------


def to_oci(profile: Seccomp) -> dict[str, Any]:
    """``profile`` as config.json's ``linux.seccomp`` object."""
    out: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno_ret is not None:
        out["defaultErrnoRet"] = profile.default_errno_ret
    if profile.architectures:
        out["architectures"] = list(profile.architectures)
    if profile.flags:
        out["flags"] = list(profile.flags)
    syscalls = []
    for rule in profile.syscalls:
        entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.errno_ret is not None:
            entry["errnoRet"] = rule.errno_ret
        if rule.args:
            entry["args"] = [{"index": a.argument, "value": a.value, "valueTwo": a.value_two,
                              "op": a.op} for a in rule.args]
        syscalls.append(entry)
    if syscalls:
        out["syscalls"] = syscalls
    return out


def save_profile(state_dir: Path, profile: Seccomp) -> None:
    """Keep the container's profile beside its state, for the processes ``exec`` adds."""
    (state_dir / PROFILE_FILE).write_text(json.dumps(to_oci(profile)))


def load_profile(state_dir: Path) -> Seccomp | None:
    """The profile ``save_profile`` kept, or None if the container has none."""
    try:
        text = (state_dir / PROFILE_FILE).read_text()
    except FileNotFoundError:
        return None
    from runtime.spec.convert import convert_seccomp

    return convert_seccomp(json.loads(text), os.fspath(state_dir / PROFILE_FILE))
