"""v2 pids: the same pids.max and pids.current files as v1."""

from runtime.cgroups.v1.pids import apply, limit_value, stats

__all__ = ["apply", "limit_value", "stats"]
