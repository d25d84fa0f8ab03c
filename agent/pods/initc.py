"""Init containers: Kubernetes' rules for running them, and for taking them over.

Init containers run one at a time in spec order, each to completion (exit 0) before
the next starts, and all of them before any app container. One that fails is run
again with the restart back-off unless restartPolicy is Never, which fails the pod
(an init container that succeeded is never run again: Always counts as OnFailure).
They share the pod's sandbox (network, IPC, UTS) and volumes like app containers,
but have no probes and publish no hostPorts.

After an agent restart (``adoption_plan``): a worker removes each run once it has
ended, so a completed init container has left nothing in the runtime but its logs.
When any app container of the pod is still there, every init container is taken as
completed (the kubelet does not run them again while the app containers run);
otherwise the newest init container still in the runtime is the current one, those
before it completed, and those after it still to run. Without any container left the
init containers run again from the first: they must be idempotent, as Kubernetes
documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from agent.pods import backoff


def init_restart_policy(pod_policy: str) -> str:
    """The restart policy an init container follows within the pod's."""
    return backoff.NEVER if pod_policy == backoff.NEVER else backoff.ON_FAILURE


class InitAdoption(NamedTuple):
    completed: frozenset[str]  # init containers to take as completed
    current: str | None  # the init container whose run in the runtime is adopted
    stale: frozenset[str]  # init containers whose runs in the runtime are to be removed


def adoption_plan(init_names: Sequence[str], app_names: Sequence[str],
                  found: Sequence[str]) -> InitAdoption:
    """Which init containers completed, given the container names ``found`` in the
    runtime after an agent restart."""
    present = set(found)
    if present & set(app_names):
        # App containers run: initialisation is over, whatever runs of it are left.
        return InitAdoption(frozenset(init_names), None, frozenset(present & set(init_names)))
    found_init = [i for i, name in enumerate(init_names) if name in present]
    if not found_init:
        return InitAdoption(frozenset(), None, frozenset())
    newest = found_init[-1]
    return InitAdoption(frozenset(init_names[:newest]), init_names[newest],
                        frozenset(init_names[i] for i in found_init[:-1]))
