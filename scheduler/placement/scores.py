"""Score plugins: 0..100 per node, higher is better; the framework adds them
up by weight."""

from __future__ import annotations

from scheduler.placement.registry import NodeScore, Scorer, register_scorer
from scheduler.placement.snapshot import (
    SCORE_DEFAULT_MEMORY,
    SCORE_DEFAULT_MILLI_CPU,
    NodeInfo,
    PodInfo,
)

MAX_SCORE = 100


def _free_fraction(used: int, allocatable: int) -> int:
    if allocatable <= 0 or used >= allocatable:
        return 0
    return (allocatable - used) * MAX_SCORE // allocatable


class LeastAllocated(Scorer):
    """Prefers the node with the most cpu and memory left after placing the
    pod (the mean of the two fractions), which spreads load. Pods without
    requests count as a small default here, so they spread too."""

    def prepare(self, pod: PodInfo) -> NodeScore | None:
        cpu = pod.milli_cpu or SCORE_DEFAULT_MILLI_CPU
        memory = pod.memory or SCORE_DEFAULT_MEMORY

        def score(node: NodeInfo) -> int:
            return (_free_fraction(node.score_milli_cpu + cpu, node.alloc_milli_cpu)
                    + _free_fraction(node.score_memory + memory, node.alloc_memory)) // 2
        return score


class Spread(Scorer):
    """Prefers nodes with fewer pods of the pod's controller (its owner
    reference with controller: true), so a ReplicaSet survives losing a node.
    The raw score is that count; normalize turns it into 100 for the fewest
    and 0 for the most among the nodes ranked."""

    def prepare(self, pod: PodInfo) -> NodeScore | None:
        uid = pod.controller
        if not uid:
            return None

        def score(node: NodeInfo) -> int:
            return node.controllers.get(uid, 0)
        return score

    def normalize(self, scores: list[int]) -> None:
        most = max(scores, default=0)
        for i, count in enumerate(scores):
            scores[i] = MAX_SCORE if most == 0 else (most - count) * MAX_SCORE // most


register_scorer("LeastAllocated", LeastAllocated())
register_scorer("Spread", Spread())
