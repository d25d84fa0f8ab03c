"""Recovery after an agent restart: relist what the node holds, then adopt or clean.

``plan_recovery`` is the decision, free of I/O: given the pods the source wants
and what is on the node (the runtime's containers, named ``<uid>.<name>.<n>`` by
the pod workers, and the pods' sandboxes and directories), it says which pods to
adopt with which containers, and which pods are leftovers to remove. Containers
whose IDs the workers did not make are not the agent's and are left alone.

``remove_leftover`` removes one leftover pod the way ``PodWorker.terminate``
removes a pod, without a worker: containers (SIGKILL: the source stopped wanting
the pod while nobody watched, there is nothing to be graceful for), image holds,
the pod cgroup, Memory emptyDirs, the sandbox and the pod's directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import NamedTuple

from agent.pods import ContainerStarter, ImageSource, Sandbox
from agent.pods.spec import pod_cgroup
from runtime import syscalls as sc


class RecoveryPlan(NamedTuple):
    adopt: dict[str, list[str]]  # wanted pod uid → its containers in the runtime
    leftovers: dict[str, list[str]]  # unwanted pod uid → its containers


def pod_uid_of(container_id: str) -> str | None:
    """The pod a worker-made container ID (``<uid>.<name>.<n>``) belongs to."""
    parts = container_id.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit():
        return None
    return parts[0]


def plan_recovery(wanted: Iterable[str], container_ids: Iterable[str],
                  pod_uids_on_disk: Iterable[str]) -> RecoveryPlan:
    wanted_set = set(wanted)
    adopt: dict[str, list[str]] = {uid: [] for uid in sorted(wanted_set)}
    leftovers: dict[str, list[str]] = {}
    for container_id in sorted(container_ids):
        uid = pod_uid_of(container_id)
        if uid is None:
            continue
        (adopt if uid in wanted_set else leftovers).setdefault(uid, []).append(container_id)
    for uid in sorted(set(pod_uids_on_disk) - wanted_set):
        leftovers.setdefault(uid, [])
    return RecoveryPlan(adopt, leftovers)


def remove_leftover(uid: str, container_ids: Iterable[str], *, containers: ContainerStarter,
                    images: ImageSource, sandbox: Sandbox, pods_dir: Path,
                    cgroup_parent: str, syscalls: sc.Syscalls | None = None,
                    log: Callable[[str], None] = print) -> None:
    """Remove everything of pod ``uid``; every step is tried, failures are logged."""
    system = syscalls or sc.LinuxSyscalls()
    pod_dir = pods_dir / uid

    def attempt(what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - the other steps must still run
            log(f"pod {uid}: removing {what}: {e}")

    for container_id in container_ids:
        attempt(f"container {container_id}", partial(containers.remove, container_id))
        attempt(f"image hold of {container_id}", partial(images.release, container_id))
    attempt("pod cgroup", lambda: containers.remove_cgroup(pod_cgroup(cgroup_parent, uid)))
    volumes = pod_dir / "volumes"
    for name in sorted(os.listdir(volumes)) if volumes.is_dir() else []:
        path = volumes / name
        if os.path.ismount(path):
            attempt(f"volume {name}", partial(system.umount2, str(path), sc.MNT_DETACH))
    attempt("sandbox", lambda: sandbox.teardown(uid))
    attempt(f"directory {pod_dir}",
            lambda: shutil.rmtree(pod_dir) if pod_dir.exists() else None)


def pod_uids_on_disk(*dirs: Path) -> set[str]:
    """Pod UIDs that have an entry (a pod directory, a netns) in any of ``dirs``."""
    found: set[str] = set()
    for directory in dirs:
        try:
            found.update(name for name in os.listdir(directory) if not name.startswith("."))
        except FileNotFoundError:
            continue
    return found

