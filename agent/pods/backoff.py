"""Whether and when an exited container starts again: restartPolicy and back-off.

Kubernetes' rules, with podium's one change: the first restart of a streak is
immediate (a container that crashes once is usually fixed by starting it again).
After that the delay is 10 s, doubling up to 5 min; a container that ran cleanly
for 10 min before it exited starts a new streak. Pure logic: the clock is passed
in, so tests drive time by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

ALWAYS = "Always"
ON_FAILURE = "OnFailure"
NEVER = "Never"
RESTART_POLICIES = (ALWAYS, ON_FAILURE, NEVER)

INITIAL_DELAY = 10.0
MAX_DELAY = 300.0
RESET_AFTER = 600.0

Clock = Callable[[], float]


def should_restart(policy: str, exit_code: int) -> bool:
    """restartPolicy's answer for a container that ended with ``exit_code``."""
    if policy in (ALWAYS, ""):
        return True
    if policy == ON_FAILURE:
        return exit_code != 0
    return False


class _Streak(NamedTuple):
    exits: int  # exits in the current streak
    restart_at: float  # clock time from which the container may start again


class RestartBackOff:
    """Per-container back-off, keyed by any hashable name (pod UID + container name)."""

    def __init__(self, clock: Clock, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY,
                 reset_after: float = RESET_AFTER) -> None:
        self.clock = clock
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._streaks: dict[object, _Streak] = {}

    def record_exit(self, key: object, started_at: float) -> float:
        """The container ``key`` (started at ``started_at``) exited now; returns the delay."""
        now = self.clock()
        streak = self._streaks.get(key)
        exits = 0 if streak is None or now - started_at >= self.reset_after else streak.exits
        delay = self.delay_for(exits)
        self._streaks[key] = _Streak(exits + 1, now + delay)
        return delay

    def delay_for(self, earlier_exits: int) -> float:
        """The delay after an exit preceded by ``earlier_exits`` in the same streak."""
        if earlier_exits == 0:
            return 0.0
        return min(self.initial * 2.0 ** (earlier_exits - 1), self.maximum)

    def remaining(self, key: object) -> float:
        """Seconds until ``key`` may start again (0: now)."""
        streak = self._streaks.get(key)
        return 0.0 if streak is None else max(0.0, streak.restart_at - self.clock())

    def in_backoff(self, key: object) -> bool:
        return self.remaining(key) > 0

    def forget(self, key: object) -> None:
        self._streaks.pop(key, None)
