"""Restart policy and back-off, on a clock driven by hand."""

from __future__ import annotations

import pytest

from agent.pods.backoff import RestartBackOff, should_restart


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("policy", "code", "restart"), [
    ("Always", 0, True), ("Always", 1, True), ("", 0, True),
    ("OnFailure", 0, False), ("OnFailure", 2, True), ("OnFailure", 137, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_policy(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_first_restart_immediate_then_doubling_to_five_minutes() -> None:
    clock = FakeClock()
    b = RestartBackOff(clock)
    delays = []
    for _ in range(9):
        started = clock.now
        clock.now += 1  # ran for a second
        delays.append(b.record_exit("c", started))
        clock.now += delays[-1]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_remaining_and_in_backoff() -> None:
    clock = FakeClock()
    b = RestartBackOff(clock)
    assert not b.in_backoff("c") and b.remaining("c") == 0
    b.record_exit("c", clock.now)
    assert not b.in_backoff("c")  # the first restart is immediate
    b.record_exit("c", clock.now)
    assert b.in_backoff("c") and b.remaining("c") == 10
    clock.now += 4
    assert b.remaining("c") == 6
    clock.now += 6
    assert not b.in_backoff("c")


def test_ten_minutes_of_clean_running_resets_the_streak() -> None:
    clock = FakeClock()
    b = RestartBackOff(clock)
    for _ in range(4):
        b.record_exit("c", clock.now)
    started = clock.now
    clock.now += 600
    assert b.record_exit("c", started) == 0
    assert b.record_exit("c", clock.now) == 10


def test_keys_are_independent_and_forget_clears() -> None:
    clock = FakeClock()
    b = RestartBackOff(clock)
    b.record_exit("a", clock.now)
    b.record_exit("a", clock.now)
    assert b.in_backoff("a") and not b.in_backoff("b")
    b.forget("a")
    assert not b.in_backoff("a")
    assert b.record_exit("a", clock.now) == 0
