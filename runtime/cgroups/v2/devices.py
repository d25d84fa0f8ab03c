"""v2 devices: a BPF program the kernel runs on every device access in the cgroup.

cgroup v2 has no devices files; instead a program of type BPF_PROG_TYPE_CGROUP_DEVICE,
attached to the cgroup, answers each open or mknod of a device node: 1 allows, 0
refuses (EPERM). ``program`` turns the state a rule list ends in
(``runtime/cgroups/devices.py: state``) into that program, so a list means the same
as on v1; ``attach`` loads it with bpf(2) and attaches it.

The program reads ``struct bpf_cgroup_dev_ctx`` (access_type: device type in the low
16 bits, access in the high 16; major; minor), then tries each exception in turn::

    r2 = type, r3 = access, r4 = major, r5 = minor
    exception:  if r2 != type goto next        (one jump per number that is not *)
                if r4 != major goto next
                if r5 != minor goto next
                r1 = r3 & mask; if r1 ... goto next   (the access test)
                r0 = the exception's answer; exit
    next: ...
    r0 = the default; exit

Denying by default, an exception answers 1 when it holds every access asked for
(mask: the access it lacks, which must be absent); allowing by default, it answers 0
when it holds any of them (mask: its access, which must be present).

A cgroup runs every program attached to it and to its ancestors with
BPF_F_ALLOW_MULTI; all must allow. Attaching closes nothing the kernel needs: the
attachment holds the program until it is detached or the cgroup is removed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from pathlib import Path
from typing import NamedTuple

from runtime.cgroups.devices import DeviceState
from runtime.errors import CgroupError

# Opcodes (include/uapi/linux/bpf.h, bpf_common.h), only those the program needs.
LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
ALU64_AND_K = 0x57  # dst &= imm
ALU64_RSH_K = 0x77  # dst >>= imm
ALU64_MOV_K = 0xB7  # dst = imm
ALU64_MOV_X = 0xBF  # dst = src
JMP32_JEQ_K = 0x16  # if (u32)dst == imm goto pc + 1 + off
JMP32_JNE_K = 0x56  # if (u32)dst != imm goto pc + 1 + off
EXIT = 0x95

DEV_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
ACC_BITS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
ALL_ACCESS = 7

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
LICENSE = b"Apache\0"
PROG_NAME = b"podium_devices"

# bpf(2) takes a union bpf_attr and its size; a larger, zeroed one is accepted by
# every kernel and leaves room for fields newer kernels write back (query.revision).
ATTR_SIZE = 256
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

_NEXT = 1 << 20  # a placeholder jump offset: "to the next exception"


class Insn(NamedTuple):
    """One eBPF instruction (struct bpf_insn)."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0


def encode(insns: list[Insn]) -> bytes:
    """The instructions as the kernel reads them: 8 bytes each, in host byte order."""
    little = sys.byteorder == "little"
    return b"".join(
        struct.pack("=BBhi", i.code, (i.dst | i.src << 4) if little else (i.dst << 4 | i.src),
                    i.off, i.imm)
        for i in insns
    )


def access_bits(access: str) -> int:
    return sum(ACC_BITS[a] for a in set(access))


def _exception(type_: str, major: int | None, minor: int | None, access: str,
               default_allow: bool) -> list[Insn]:
    block = [Insn(JMP32_JNE_K, dst=2, off=_NEXT, imm=DEV_TYPE[type_])]
    if major is not None:
        block.append(Insn(JMP32_JNE_K, dst=4, off=_NEXT, imm=_s32(major)))
    if minor is not None:
        block.append(Insn(JMP32_JNE_K, dst=5, off=_NEXT, imm=_s32(minor)))
    bits = access_bits(access)
    if default_allow:  # refuse if any asked-for access is in the exception
        block += [Insn(ALU64_MOV_X, dst=1, src=3), Insn(ALU64_AND_K, dst=1, imm=bits),
                  Insn(JMP32_JEQ_K, dst=1, off=_NEXT, imm=0)]
    elif bits != ALL_ACCESS:  # allow only if no asked-for access is missing from it
        block += [Insn(ALU64_MOV_X, dst=1, src=3),
                  Insn(ALU64_AND_K, dst=1, imm=ALL_ACCESS & ~bits),
                  Insn(JMP32_JNE_K, dst=1, off=_NEXT, imm=0)]
    block += [Insn(ALU64_MOV_K, dst=0, imm=0 if default_allow else 1), Insn(EXIT)]
    # Each placeholder jumps to just past the block.
    return [i._replace(off=len(block) - n - 1) if i.off == _NEXT else i
            for n, i in enumerate(block)]


def _s32(value: int) -> int:
    """A u32 as the signed imm field holds it (JMP32 compares the low 32 bits)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def program(state: DeviceState) -> list[Insn]:
    insns = [
        Insn(LDX_MEM_W, dst=2, src=1, off=0),  # access_type
        Insn(ALU64_AND_K, dst=2, imm=0xFFFF),  # the device type
        Insn(LDX_MEM_W, dst=3, src=1, off=0),
        Insn(ALU64_RSH_K, dst=3, imm=16),  # the access asked for
        Insn(LDX_MEM_W, dst=4, src=1, off=4),  # major
        Insn(LDX_MEM_W, dst=5, src=1, off=8),  # minor
    ]
    for key, access in state.exceptions:
        insns += _exception(key.type, key.major, key.minor, access, state.default_allow)
    return insns + [Insn(ALU64_MOV_K, dst=0, imm=1 if state.default_allow else 0), Insn(EXIT)]


# --- bpf(2) ---


def _bpf(where: Path, what: str, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = BPF_SYSCALL.get(os.uname().machine)
    if nr is None:
        raise CgroupError(str(where), f"device rules need bpf(2), whose number podium does "
                                      f"not know on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = int(libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr,
                           ctypes.c_uint(ATTR_SIZE)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def load(where: Path, insns: list[Insn]) -> int:
    """Load the program; returns its fd. A refusal says what the verifier said."""
    code = ctypes.create_string_buffer(encode(insns))
    license_ = ctypes.create_string_buffer(LICENSE)

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("=IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns),
                         ctypes.addressof(code), ctypes.addressof(license_),
                         1 if log is not None else 0, len(log) if log is not None else 0,
                         ctypes.addressof(log) if log is not None else 0, 0, 0, PROG_NAME)
        return _bpf(where, "loading the device program", BPF_PROG_LOAD, attr)

    try:
        return attempt(None)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EACCES):
            raise CgroupError(str(where), str(e.strerror)) from None
        log = ctypes.create_string_buffer(1 << 16)
        try:
            return attempt(log)  # again, to learn why
        except OSError:
            said = [s for s in log.value.decode(errors="replace").splitlines() if s.strip()]
            raise CgroupError(str(where), f"{e.strerror}; the verifier said: "
                                          f"{said[-1] if said else 'nothing'}") from None


def _attached_ids(where: Path, dir_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=IIIIQI", attr, 0, dir_fd, BPF_CGROUP_DEVICE, 0, 0,
                     ctypes.addressof(ids), len(ids))
    _bpf(where, "listing the cgroup's device programs", BPF_PROG_QUERY, attr)
    (count,) = struct.unpack_from("=I", attr, 24)
    return list(ids[:count])


def _detach(where: Path, dir_fd: int, prog_id: int) -> None:
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=I", attr, 0, prog_id)
    try:
        prog_fd = _bpf(where, f"opening device program {prog_id}", BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return  # gone meanwhile
        raise
    try:
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("=III", attr, 0, dir_fd, prog_fd, BPF_CGROUP_DEVICE)
        _bpf(where, f"detaching device program {prog_id}", BPF_PROG_DETACH, attr)
    finally:
        os.close(prog_fd)


def attach(cgroup_dir: Path, insns: list[Insn]) -> None:
    """Load the program and make it the cgroup's only device program.

    Programs already attached to the cgroup (an earlier apply) are detached only
    after the new one is in place, so there is no moment without one."""
    prog_fd = load(cgroup_dir, insns)
    try:
        try:
            dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise CgroupError(str(cgroup_dir), f"cannot open: {e.strerror}") from None
        try:
            old = _attached_ids(cgroup_dir, dir_fd)
            attr = ctypes.create_string_buffer(ATTR_SIZE)
            struct.pack_into("=IIII", attr, 0, dir_fd, prog_fd, BPF_CGROUP_DEVICE,
                             BPF_F_ALLOW_MULTI)
            _bpf(cgroup_dir, "attaching the device program", BPF_PROG_ATTACH, attr)
            for prog_id in old:
                _detach(cgroup_dir, dir_fd, prog_id)
        except OSError as e:
            raise CgroupError(str(cgroup_dir), str(e.strerror)) from None
        finally:
            os.close(dir_fd)
    finally:
        os.close(prog_fd)
