"""Placement plugins by name: filters say why a node cannot take a pod, scorers
rank the nodes that can.

A plugin is prepared once per pod and returns a per-node function with the
pod's facts already bound, so the per-node work is a closure call; it returns
None when it has nothing to check or rank for this pod (a pod without host
ports skips HostPorts), which keeps the per-node cost to the plugins that
matter.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.placement.snapshot import NodeInfo, PodInfo

# node -> None if the node passes, else the reason it does not (for people,
# counted in "0/3 nodes are available: ..."), e.g. "Insufficient cpu".
NodeCheck = Callable[[NodeInfo], str | None]
FilterPlugin = Callable[[PodInfo], NodeCheck | None]

# node -> 0..100, higher is better (after normalize).
NodeScore = Callable[[NodeInfo], int]


class PlacementError(ValueError):
    """A placement configuration names an unknown or duplicate plugin."""


class Scorer:
    """A score plugin. `normalize` may rescale the raw scores of the nodes
    being ranked, in place, when a score only means something relative to
    the others (e.g. "fewest pods of this controller")."""

    def prepare(self, pod: PodInfo) -> NodeScore | None:
        raise NotImplementedError

    def normalize(self, scores: list[int]) -> None:
        return None


FILTERS: dict[str, FilterPlugin] = {}
SCORERS: dict[str, Scorer] = {}


def register_filter(name: str) -> Callable[[FilterPlugin], FilterPlugin]:
    def add(plugin: FilterPlugin) -> FilterPlugin:
        if name in FILTERS:
            raise PlacementError(f"filter plugin {name!r} is registered twice")
        FILTERS[name] = plugin
        return plugin
    return add


def register_scorer(name: str, scorer: Scorer) -> Scorer:
    if name in SCORERS:
        raise PlacementError(f"score plugin {name!r} is registered twice")
    SCORERS[name] = scorer
    return scorer


def get_filter(name: str) -> FilterPlugin:
    try:
        return FILTERS[name]
    except KeyError:
        raise PlacementError(
            f"unknown filter plugin {name!r} (known: {', '.join(sorted(FILTERS))})") from None


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise PlacementError(
            f"unknown score plugin {name!r} (known: {', '.join(sorted(SCORERS))})") from None
