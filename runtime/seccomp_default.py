"""podium's default seccomp profile, for the agent to give containers that ask for
``RuntimeDefault``.

Intent: the same effect as Docker's default profile for a container with Docker's
default capability set (``runtime.spec.model.DEFAULT_CAPABILITIES``). Every system
call is refused with EPERM unless listed here. The list is what ordinary programs
need — files, memory, processes and threads, signals, time, sockets, IPC, event
loops — and it leaves out what would reach past the container or the kernel's
isolation: new namespaces (``unshare``, ``setns``, ``clone`` with ``CLONE_NEW*``
flags), mounts, kernel modules, keyrings, ``bpf``, ``perf_event_open``, reboot,
swap, the clock, accounting, ``userfaultfd``, ``io_uring``, and the handle-based
opens that escape a chroot. Those need capabilities a default container does not
hold; here they are refused up front, so a kernel bug behind them is out of reach.

Three calls are allowed only with certain arguments: ``clone`` without namespace
flags, ``personality`` with the few personas programs really use, ``socket`` for
any family but AF_VSOCK (a path to the host). ``clone3`` answers ENOSYS: its
flags live in memory that seccomp cannot read, and ENOSYS makes the C library
fall back to ``clone``, which the filter can check.

Names this machine does not have are skipped when the filter is built, so one
list serves every architecture.
"""

from __future__ import annotations

import errno
import platform

from runtime.spec.model import Seccomp, SeccompArg, SeccompSyscall

# Grouped by what they are for; each group is one rule in the profile.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "files": (
        "access", "chdir", "chmod", "chown", "chown32", "close", "close_range",
        "copy_file_range", "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2",
        "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2",
        "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
        "flistxattr", "flock", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64",
        "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd",
        "getdents", "getdents64", "getxattr", "lchown", "lchown32", "lgetxattr", "link",
        "linkat", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
        "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open",
        "openat", "openat2", "pipe", "pipe2", "pread64", "preadv", "preadv2", "pwrite64",
        "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
        "removexattr", "rename", "renameat", "renameat2", "rmdir", "sendfile", "sendfile64",
        "setxattr", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
        "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate", "truncate64",
        "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
        "vmsplice", "write", "writev", "chroot", "fanotify_mark", "inotify_add_watch",
        "inotify_init", "inotify_init1", "inotify_rm_watch", "memfd_create", "ioctl",
    ),
    "memory": (
        "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_secret",
        "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap",
        "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free",
        "pkey_mprotect", "remap_file_pages",
    ),
    "processes": (
        "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "getcpu",
        "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
        "getgroups32", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getresgid",
        "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
        "getrusage", "getsid", "get_thread_area", "gettid", "getuid", "getuid32",
        "ioprio_get", "ioprio_set", "kill", "pidfd_open", "pidfd_send_signal", "prctl",
        "prlimit64", "process_mrelease", "process_vm_readv", "process_vm_writev", "ptrace",
        "restart_syscall", "rseq", "sched_getaffinity", "sched_getattr", "sched_getparam",
        "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
        "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
        "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
        "setgroups", "setgroups32", "setpgid", "setpriority", "setregid", "setregid32",
        "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
        "setrlimit", "set_robust_list", "setsid", "set_thread_area", "set_tid_address",
        "setuid", "setuid32", "tgkill", "tkill", "ugetrlimit", "uname", "vfork", "wait4",
        "waitid", "waitpid", "landlock_add_rule", "landlock_create_ruleset",
        "landlock_restrict_self", "sysinfo",
    ),
    "signals": (
        "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
        "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
        "sigreturn",
    ),
    "time": (
        "adjtimex", "alarm", "clock_adjtime", "clock_adjtime64", "clock_getres",
        "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
        "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep", "setitimer",
        "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
        "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
        "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
        "times",
    ),
    "waiting": (
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
        "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "futex",
        "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
        "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
        "io_setup", "io_submit", "_newselect", "poll", "ppoll", "ppoll_time64", "pselect6",
        "pselect6_time64", "select",
    ),
    "sockets": (
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
        "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
        "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketcall",
        "socketpair",
    ),
    "ipc": (
        "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
        "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
        "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    ),
}

# Calls only one architecture has, by platform.machine().
_ARCH_SPECIFIC: dict[str, tuple[str, ...]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "i686": ("modify_ldt",),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                "cacheflush", "set_tls"),
    "armv7l": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
               "cacheflush", "set_tls"),
    "s390x": ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    "riscv64": ("riscv_flush_icache",),
}

# The native architecture and the ones its kernel also runs programs of.
_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "ppc64le": ("SCMP_ARCH_PPC64LE",),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "riscv64": ("SCMP_ARCH_RISCV64",),
}

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
# CLONE_NEWPID | CLONE_NEWNET: clone is allowed when none of these bits is set.
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000

# personality(2) values programs use: Linux, 32-bit Linux, UNAME26 with either,
# and 0xffffffff, which only reads the current persona.
_PERSONAS = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

AF_VSOCK = 40


def default_profile(machine: str | None = None) -> Seccomp:
    """podium's default profile for this machine (or for ``machine``, as
    ``platform.machine()`` names it)."""
    machine = machine or platform.machine()
    allow = "SCMP_ACT_ALLOW"
    rules = [SeccompSyscall(names=names, action=allow) for names in _ALLOWED.values()]
    if machine in _ARCH_SPECIFIC:
        rules.append(SeccompSyscall(names=_ARCH_SPECIFIC[machine], action=allow))
    # On s390 the flags are clone's second argument.
    clone_flags = 1 if machine.startswith("s390") else 0
    rules += [
        SeccompSyscall(names=("clone",), action=allow, args=(
            SeccompArg(argument=clone_flags, value=CLONE_NAMESPACE_FLAGS, value_two=0,
                       op="SCMP_CMP_MASKED_EQ"),)),
        SeccompSyscall(names=("clone3",), action="SCMP_ACT_ERRNO", errno_ret=errno.ENOSYS),
        SeccompSyscall(names=("socket",), action=allow, args=(
            SeccompArg(argument=0, value=AF_VSOCK, op="SCMP_CMP_NE"),)),
    ]
    rules += [SeccompSyscall(names=("personality",), action=allow,
                             args=(SeccompArg(argument=0, value=persona, op="SCMP_CMP_EQ"),))
              for persona in _PERSONAS]
    return Seccomp(default_action="SCMP_ACT_ERRNO", default_errno_ret=errno.EPERM,
                   architectures=_ARCHITECTURES.get(machine, ()), syscalls=tuple(rules))
