"""``delete``: remove a stopped container's cgroup and state. ``force`` kills it first.

Deleting a container that still runs fails and changes nothing, as the OCI spec
requires; ``force`` is the explicit way to end it.
"""

from __future__ import annotations

from runtime.cgroups.base import Cgroup
from runtime.errors import IllegalTransition
from runtime.processes import wait_gone
from runtime.state import State, StateStore, Status


def delete(store: StateStore, state: State, cgroup: Cgroup, force: bool = False) -> None:
    if state.status is not Status.STOPPED:
        if not force:
            raise IllegalTransition(
                f"container {state.id} is {state.status.value}: cannot delete it "
                "(stop it first, or use --force)"
            )
        if cgroup.exists():
            if state.status is Status.PAUSED:
                cgroup.thaw()
            cgroup.kill()
        wait_gone(state.pid, state.pid_start, timeout=10.0)
    cgroup.remove()
    store.remove(state.id)
