"""``delete``: remove a stopped container's cgroup and state. ``force`` kills it first.

Deleting a container that still runs fails and changes nothing, as the OCI spec
requires; ``force`` is the explicit way to end it. The poststop hooks run once
everything is removed, just before delete returns.
"""

from __future__ import annotations

from runtime import hooks
from runtime.cgroups.base import Cgroup
from runtime.errors import IllegalTransition
from runtime.processes import wait_gone
from runtime.state import State, StateStore, Status


def delete(store: StateStore, state: State, cgroup: Cgroup, force: bool = False,
           warn: hooks.Warn = hooks.warn_stderr) -> None:
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
    poststop = hooks.load(store.dir(state.id)).poststop  # before the state directory goes
    cgroup.remove()
    store.remove(state.id)
    hooks.run_hooks_warning("poststop", poststop,
                            state._replace(status=Status.STOPPED).oci(), warn)
