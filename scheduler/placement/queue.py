"""The pods waiting for a node.

Pending pods (no spec.node_name, no deletion_timestamp, not finished) wait in
FIFO order in the active queue. A pod that fits nowhere moves to the
unschedulable set, and goes back to the end of the active queue when the
cluster changes in a way that may make room (`move_all`: a node was added or
changed, a bound pod left or finished), when its own spec changes, or after
`flush_after` seconds there (`flush`), in case something was missed. A pod
that is deleted or bound (by anyone) leaves both.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from proto.podium.v1 import pod_pb2
from scheduler.objects import Key
from scheduler.placement.snapshot import TERMINAL_PHASES, pod_key


def is_pending(pod: pod_pb2.Pod) -> bool:
    return (not pod.spec.node_name and not pod.metadata.HasField("deletion_timestamp")
            and pod.status.phase not in TERMINAL_PHASES)


class PodQueue:
    def __init__(self, clock: Callable[[], float], flush_after: float = 30.0) -> None:
        self._clock = clock
        self.flush_after = flush_after
        self._active: OrderedDict[Key, pod_pb2.Pod] = OrderedDict()
        # key -> (pod, when it was found unschedulable)
        self._unschedulable: dict[Key, tuple[pod_pb2.Pod, float]] = {}

    def __len__(self) -> int:
        return len(self._active) + len(self._unschedulable)

    @property
    def active(self) -> int:
        return len(self._active)

    def unschedulable(self) -> list[Key]:
        return list(self._unschedulable)

    def __contains__(self, key: object) -> bool:
        return key in self._active or key in self._unschedulable

    def update(self, pod: pod_pb2.Pod) -> None:
        """A pod was added or changed: queue it if pending, drop it if not."""
        key = pod_key(pod)
        if not is_pending(pod):
            self.remove(key)
            return
        if key in self._active:
            self._active[key] = pod  # keeps its place in line
            return
        waiting = self._unschedulable.get(key)
        if waiting is not None:
            old, since = waiting
            if old.spec == pod.spec:
                # Only status or metadata changed (e.g. our own PodScheduled
                # condition): nothing that would let it fit now.
                self._unschedulable[key] = (pod, since)
                return
            del self._unschedulable[key]
        self._active[key] = pod

    def remove(self, key: Key) -> None:
        self._active.pop(key, None)
        self._unschedulable.pop(key, None)

    def pop(self) -> pod_pb2.Pod | None:
        """The pod first in line, or None."""
        if not self._active:
            return None
        return self._active.popitem(last=False)[1]

    def park(self, pod: pod_pb2.Pod) -> None:
        """`pod` fits nowhere for now."""
        key = pod_key(pod)
        self._active.pop(key, None)
        self._unschedulable[key] = (pod, self._clock())

    def move_all(self) -> int:
        """Every unschedulable pod back in line; returns how many."""
        moved = len(self._unschedulable)
        for key, (pod, _) in self._unschedulable.items():
            self._active[key] = pod
        self._unschedulable.clear()
        return moved

    def flush(self) -> int:
        """Back in line: the pods unschedulable for flush_after seconds or more."""
        now = self._clock()
        due = [k for k, (_, since) in self._unschedulable.items()
               if now - since >= self.flush_after]
        for key in due:
            self._active[key] = self._unschedulable.pop(key)[0]
        return len(due)
