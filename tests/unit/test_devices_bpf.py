"""The v2 device program: its instructions and bytes, run by a small eBPF interpreter
here and checked against the rules' meaning; the v2 driver's use of it (no root)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.cgroups import CgroupV2Driver
from runtime.cgroups.devices import DeviceKey, DeviceState, allows, effective_rules, state
from runtime.cgroups.v2 import devices as v2dev
from runtime.cgroups.v2.devices import (
    ALU64_AND_K,
    ALU64_MOV_K,
    ALU64_MOV_X,
    ALU64_RSH_K,
    EXIT,
    JMP32_JEQ_K,
    JMP32_JNE_K,
    LDX_MEM_W,
    Insn,
    encode,
    program,
)
from runtime.errors import CgroupError
from runtime.spec.model import DeviceRule, Pids, Resources
from tests.conftest import need
from tests.unit.test_cgroups_v2 import FakeV2Kernel

PROLOGUE = [
    Insn(LDX_MEM_W, dst=2, src=1, off=0),
    Insn(ALU64_AND_K, dst=2, imm=0xFFFF),
    Insn(LDX_MEM_W, dst=3, src=1, off=0),
    Insn(ALU64_RSH_K, dst=3, imm=16),
    Insn(LDX_MEM_W, dst=4, src=1, off=4),
    Insn(LDX_MEM_W, dst=5, src=1, off=8),
]
TYPES = {"b": 1, "c": 2}
BITS = {"m": 1, "r": 2, "w": 4}
U64 = (1 << 64) - 1


def run(code: bytes, type_: str, major: int, minor: int, access: str) -> int:
    """Interpret the program on one request, as the kernel would (only its opcodes)."""
    ctx = struct.pack("=III", TYPES[type_] | sum(BITS[a] for a in access) << 16, major, minor)
    regs = [0] * 11
    pc = 0
    while True:
        code_, regs_byte, off, imm = struct.unpack_from("=BBhi", code, pc * 8)
        dst, src = (regs_byte & 15, regs_byte >> 4) if sys.byteorder == "little" \
            else (regs_byte >> 4, regs_byte & 15)
        pc += 1
        if code_ == LDX_MEM_W:
            assert src == 1 and off in (0, 4, 8), "reads only the context"
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif code_ == ALU64_AND_K:
            regs[dst] &= imm & U64
        elif code_ == ALU64_RSH_K:
            regs[dst] >>= imm
        elif code_ == ALU64_MOV_K:
            regs[dst] = imm & U64
        elif code_ == ALU64_MOV_X:
            regs[dst] = regs[src]
        elif code_ in (JMP32_JEQ_K, JMP32_JNE_K):
            equal = regs[dst] & 0xFFFFFFFF == imm & 0xFFFFFFFF
            if equal == (code_ == JMP32_JEQ_K):
                pc += off
        elif code_ == EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code_:#x}")


def reachable(insns: list[Insn]) -> set[int]:
    """Instructions the verifier's control-flow walk reaches (it refuses any other)."""
    seen: set[int] = set()
    todo = [0]
    while todo:
        pc = todo.pop()
        if pc in seen:
            continue
        assert 0 <= pc < len(insns), f"jump out of the program at {pc}"
        seen.add(pc)
        i = insns[pc]
        if i.code == EXIT:
            continue
        todo.append(pc + 1)
        if i.code in (JMP32_JEQ_K, JMP32_JNE_K):
            todo.append(pc + 1 + i.off)
    return seen


# --- the program for known rules ---


def test_instruction_bytes() -> None:
    need(sys.byteorder == "little", "the bytes below are little-endian")
    assert encode([Insn(LDX_MEM_W, dst=2, src=1, off=4)]) == bytes.fromhex("6112040000000000")
    assert encode([Insn(JMP32_JNE_K, dst=4, off=3, imm=136)]) == bytes.fromhex("5604030088000000")
    assert encode([Insn(ALU64_MOV_K, dst=0, imm=1), Insn(EXIT)]) == \
        bytes.fromhex("b700000001000000" "9500000000000000")


def test_deny_by_default_program() -> None:
    s = DeviceState(default_allow=False, exceptions=(
        (DeviceKey("c", 1, 3), "rwm"),
        (DeviceKey("c", 136, None), "rw"),
    ))
    assert program(s) == [
        *PROLOGUE,
        Insn(JMP32_JNE_K, dst=2, off=4, imm=2),  # char?
        Insn(JMP32_JNE_K, dst=4, off=3, imm=1),  # major 1?
        Insn(JMP32_JNE_K, dst=5, off=2, imm=3),  # minor 3?
        Insn(ALU64_MOV_K, dst=0, imm=1),  # rwm holds any access: allow
        Insn(EXIT),
        Insn(JMP32_JNE_K, dst=2, off=6, imm=2),
        Insn(JMP32_JNE_K, dst=4, off=5, imm=136),  # any minor: no test
        Insn(ALU64_MOV_X, dst=1, src=3),
        Insn(ALU64_AND_K, dst=1, imm=1),  # asks for mknod, which it lacks?
        Insn(JMP32_JNE_K, dst=1, off=2, imm=0),
        Insn(ALU64_MOV_K, dst=0, imm=1),
        Insn(EXIT),
        Insn(ALU64_MOV_K, dst=0, imm=0),  # no exception: deny
        Insn(EXIT),
    ]


def test_allow_by_default_program() -> None:
    s = DeviceState(default_allow=True, exceptions=((DeviceKey("b", None, None), "w"),))
    assert program(s) == [
        *PROLOGUE,
        Insn(JMP32_JNE_K, dst=2, off=5, imm=1),
        Insn(ALU64_MOV_X, dst=1, src=3),
        Insn(ALU64_AND_K, dst=1, imm=4),  # asks for write?
        Insn(JMP32_JEQ_K, dst=1, off=2, imm=0),
        Insn(ALU64_MOV_K, dst=0, imm=0),
        Insn(EXIT),
        Insn(ALU64_MOV_K, dst=0, imm=1),
        Insn(EXIT),
    ]


def test_large_numbers_compare_as_u32() -> None:
    s = state((DeviceRule(allow=True, type="c", major=0xFFFFFFFE, minor=5, access="r"),))
    code = encode(program(s))
    assert run(code, "c", 0xFFFFFFFE, 5, "r") == 1
    assert run(code, "c", 0x7FFFFFFE, 5, "r") == 0


def test_runc_defaults_run() -> None:
    code = encode(program(state(effective_rules((DeviceRule(allow=False),), ()))))
    assert run(code, "c", 1, 3, "rw") == 1
    assert run(code, "c", 136, 0, "rw") == 1
    assert run(code, "b", 8, 0, "m") == 1
    assert run(code, "b", 8, 0, "r") == 0
    assert run(code, "c", 10, 229, "rw") == 0


# --- the program means what the rules mean ---

rules_st = st.lists(st.builds(
    DeviceRule,
    allow=st.booleans(),
    type=st.sampled_from("abcc"),
    major=st.sampled_from([None, 1, 2]),
    minor=st.sampled_from([None, 3, 4]),
    access=st.sets(st.sampled_from("rwm"), min_size=1).map("".join),
), max_size=8)
request_st = st.tuples(st.sampled_from("bc"), st.sampled_from([1, 2, 7]),
                       st.sampled_from([3, 4, 9]),
                       st.sets(st.sampled_from("rwm"), min_size=1).map("".join))


@settings(max_examples=300, deadline=None)
@given(rules=rules_st, requests=st.lists(request_st, min_size=1, max_size=6))
def test_program_agrees_with_the_rules(rules: list[DeviceRule],
                                       requests: list[tuple[str, int, int, str]]) -> None:
    s = state(tuple(rules))
    insns = program(s)
    assert reachable(insns) == set(range(len(insns)))
    code = encode(insns)
    for type_, major, minor, access in requests:
        assert run(code, type_, major, minor, access) == int(allows(s, type_, major, minor,
                                                                   access))


# --- the v2 driver ---


@pytest.fixture
def attached(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, list[Insn]]]:
    calls: list[tuple[Path, list[Insn]]] = []
    monkeypatch.setattr(v2dev, "attach", lambda d, insns: calls.append((d, insns)))
    return calls


def test_v2_driver_attaches_the_program_after_the_limits(
        tmp_path: Path, attached: list[tuple[Path, list[Insn]]]) -> None:
    kernel = FakeV2Kernel(tmp_path)
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    rules = effective_rules((DeviceRule(allow=False),), ())
    cg.apply(Resources(pids=Pids(limit=5), devices=rules))
    assert kernel.writes == [("podium/a/pids.max", "5")]
    assert attached == [(tmp_path / "podium/a", program(state(rules)))]


def test_v2_driver_without_rules_attaches_nothing(
        tmp_path: Path, attached: list[tuple[Path, list[Insn]]]) -> None:
    kernel = FakeV2Kernel(tmp_path)
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("podium/a")
    cg.create()
    cg.apply(Resources(pids=Pids(limit=5)))
    assert attached == []


def test_v2_driver_bad_rule_writes_nothing(
        tmp_path: Path, attached: list[tuple[Path, list[Insn]]]) -> None:
    kernel = FakeV2Kernel(tmp_path)
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    with pytest.raises(CgroupError, match="access 'x' is not made of r, w, m"):
        cg.apply(Resources(pids=Pids(limit=5), devices=(DeviceRule(allow=True, access="x"),)))
    assert kernel.writes == [] and attached == []
