"""``kill``: send a signal to a container's init, or with ``all`` to every process in it."""

from __future__ import annotations

import signal

from runtime.cgroups.base import Cgroup
from runtime.errors import IllegalTransition
from runtime.processes import signal_pid
from runtime.state import State, Status


def kill(state: State, cgroup: Cgroup, sig: int, all_processes: bool = False) -> None:
    if state.status is Status.STOPPED:
        raise IllegalTransition(f"container {state.id} is stopped: cannot signal it")
    if all_processes:
        for pid in cgroup.procs():
            signal_pid(pid, sig)
    else:
        signal_pid(state.pid, sig)
    if state.status is Status.PAUSED and sig == signal.SIGKILL:
        # A frozen process only dies once thawed.
        cgroup.thaw()
