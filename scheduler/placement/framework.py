"""decide(pod, snapshot) -> Decision: filter the nodes, score a sample, pick one.

Filtering starts at a node that rotates from one decision to the next and
stops once enough feasible nodes are found (Kubernetes'
percentageOfNodesToScore): max(min_feasible_nodes, percentage% of the
nodes). So a decision costs about the same on a large cluster as on a
medium one, and the rotation makes every node a candidate in turn. When no
node fits, every node was filtered, and the Decision counts each node once,
under the first filter that rejected it.

Equal best scores are broken round-robin, so equal nodes take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from proto.podium.v1 import pod_pb2
from proto.quantity import QuantityError
from scheduler.placement import filters as _filters  # noqa: F401  (registers the filters)
from scheduler.placement import scores as _scores  # noqa: F401  (registers the scorers)
from scheduler.placement.registry import (
    FilterPlugin,
    NodeCheck,
    PlacementError,
    Scorer,
    get_filter,
    get_scorer,
)
from scheduler.placement.snapshot import NodeInfo, PodInfo, Snapshot

# Order matters for the message: a node is counted under the first filter
# that rejects it, so the plain facts (readiness, cordon) come first.
DEFAULT_FILTERS: tuple[str, ...] = (
    "NodeReady", "NodeUnschedulable", "NodeSelector", "TaintToleration", "HostPorts",
    "ResourcesFit",
)
DEFAULT_SCORERS: tuple[tuple[str, int], ...] = (("LeastAllocated", 1), ("Spread", 2))

NO_NODES = "no nodes available to schedule pods"


@dataclass(frozen=True, slots=True)
class Decision:
    # The chosen node, or None when no node fits (see message).
    node: str | None
    # When none fits: reason -> how many nodes it rejected.
    reasons: dict[str, int] = field(default_factory=dict)
    # When none fits: "0/3 nodes are available: 2 Insufficient memory, ...".
    message: str = ""
    # Nodes filtered, and how many of them fit.
    evaluated: int = 0
    feasible: int = 0


def unschedulable_message(total: int, reasons: dict[str, int]) -> str:
    """Kubernetes' FailedScheduling text, reasons sorted by their text."""
    if total == 0:
        return NO_NODES
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return f"0/{total} nodes are available: {parts}."


class Framework:
    """The configured plugins and the state that spreads decisions over time
    (where the next filtering pass starts, which of equal nodes is next)."""

    def __init__(self, filters: Sequence[str] = DEFAULT_FILTERS,
                 scorers: Sequence[tuple[str, int]] = DEFAULT_SCORERS, *,
                 min_feasible_nodes: int = 100, percentage_of_nodes_to_score: int = 5) -> None:
        if min_feasible_nodes < 1:
            raise PlacementError(f"min_feasible_nodes must be >= 1, not {min_feasible_nodes}")
        if not 0 < percentage_of_nodes_to_score <= 100:
            raise PlacementError("percentage_of_nodes_to_score must be in 1..100, not "
                                 f"{percentage_of_nodes_to_score}")
        self.filters: list[tuple[str, FilterPlugin]] = [(n, get_filter(n)) for n in filters]
        self.scorers: list[tuple[str, Scorer, int]] = [
            (n, get_scorer(n), w) for n, w in scorers]
        self.min_feasible_nodes = min_feasible_nodes
        self.percentage = percentage_of_nodes_to_score
        self._next_start = 0
        self._next_tie = 0

    def feasible_wanted(self, nodes: int) -> int:
        """How many feasible nodes to find before scoring."""
        return min(nodes, max(self.min_feasible_nodes, nodes * self.percentage // 100))

    def checks(self, pod: PodInfo) -> list[NodeCheck]:
        return [c for _, plugin in self.filters if (c := plugin(pod)) is not None]

    def reject_reason(self, pod: PodInfo, node: NodeInfo) -> str | None:
        """Why `node` cannot take `pod` (the first filter's reason), or None."""
        for check in self.checks(pod):
            reason = check(node)
            if reason is not None:
                return reason
        return None

    def decide(self, pod: pod_pb2.Pod | PodInfo, snapshot: Snapshot) -> Decision:
        if isinstance(pod, PodInfo):
            info = pod
        else:
            try:
                info = PodInfo.of(pod)
            except QuantityError as e:
                return Decision(None, message=str(e))
        order = snapshot.order
        total = len(order)
        if total == 0:
            return Decision(None, message=NO_NODES)
        checks = self.checks(info)
        wanted = self.feasible_wanted(total)
        start = self._next_start % total
        feasible: list[NodeInfo] = []
        reasons: dict[str, int] = {}
        evaluated = 0
        for i in range(total):
            j = start + i
            node = order[j - total if j >= total else j]
            evaluated += 1
            for check in checks:
                reason = check(node)
                if reason is not None:
                    reasons[reason] = reasons.get(reason, 0) + 1
                    break
            else:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
        self._next_start = (start + evaluated) % total
        if not feasible:
            return Decision(None, reasons, unschedulable_message(total, reasons),
                            evaluated, 0)
        chosen = feasible[0] if len(feasible) == 1 else self._best(info, feasible)
        return Decision(chosen.name, evaluated=evaluated, feasible=len(feasible))

    def _best(self, pod: PodInfo, nodes: list[NodeInfo]) -> NodeInfo:
        totals = [0] * len(nodes)
        for _, scorer, weight in self.scorers:
            score = scorer.prepare(pod)
            if score is None:
                continue
            scores = [score(node) for node in nodes]
            scorer.normalize(scores)
            for i, s in enumerate(scores):
                totals[i] += weight * s
        best = max(totals)
        ties = [i for i, t in enumerate(totals) if t == best]
        pick = ties[self._next_tie % len(ties)]
        self._next_tie += 1
        return nodes[pick]


def decide(pod: pod_pb2.Pod | PodInfo, snapshot: Snapshot,
           framework: Framework | None = None) -> Decision:
    """One decision with `framework` (default plugins if None). A loop keeps
    one Framework so its rotation spreads decisions; a fresh one always starts
    at the first node."""
    return (framework or Framework()).decide(pod, snapshot)
