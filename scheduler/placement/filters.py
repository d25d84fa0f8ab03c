"""Filter plugins: each rejects the nodes a pod cannot run on, with a reason.

The reasons are Kubernetes' texts, so "why is my pod Pending?" reads the same
here as there.
"""

from __future__ import annotations

from scheduler.placement.registry import NodeCheck, register_filter
from scheduler.placement.snapshot import NodeInfo, PodInfo

NOT_READY = "node(s) NotReady"
UNSCHEDULABLE = "node(s) were unschedulable"
INSUFFICIENT_CPU = "Insufficient cpu"
INSUFFICIENT_MEMORY = "Insufficient memory"
TOO_MANY_PODS = "Too many pods"
SELECTOR_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
PORTS_IN_USE = "node(s) didn't have free ports for the requested pod ports"


def untolerated_taint(key: str, value: str) -> str:
    return f"node(s) had untolerated taint {{{key}: {value}}}"


def _node_ready(node: NodeInfo) -> str | None:
    return None if node.ready else NOT_READY


def _node_schedulable(node: NodeInfo) -> str | None:
    return UNSCHEDULABLE if node.unschedulable else None


@register_filter("NodeReady")
def node_ready(pod: PodInfo) -> NodeCheck | None:
    return _node_ready


@register_filter("NodeUnschedulable")
def node_unschedulable(pod: PodInfo) -> NodeCheck | None:
    return _node_schedulable


@register_filter("ResourcesFit")
def resources_fit(pod: PodInfo) -> NodeCheck | None:
    cpu, memory = pod.milli_cpu, pod.memory

    # Every pod takes one of the node's pod slots, even one without requests.
    def check(node: NodeInfo) -> str | None:
        if node.pod_count + 1 > node.alloc_pods:
            return TOO_MANY_PODS
        if cpu and node.milli_cpu + cpu > node.alloc_milli_cpu:
            return INSUFFICIENT_CPU
        if memory and node.memory + memory > node.alloc_memory:
            return INSUFFICIENT_MEMORY
        return None
    return check


@register_filter("NodeSelector")
def node_selector(pod: PodInfo) -> NodeCheck | None:
    wanted = tuple(pod.node_selector.items())
    if not wanted:
        return None

    def check(node: NodeInfo) -> str | None:
        labels = node.labels
        for key, value in wanted:
            if labels.get(key) != value:
                return SELECTOR_MISMATCH
        return None
    return check


@register_filter("HostPorts")
def host_ports(pod: PodInfo) -> NodeCheck | None:
    wanted = pod.host_ports
    if not wanted:
        return None

    def check(node: NodeInfo) -> str | None:
        if not node.ports:
            return None
        for port in wanted:
            if not node.host_port_free(port):
                return PORTS_IN_USE
        return None
    return check


def tolerates(toleration: tuple[str, str, str, str], taint: tuple[str, str, str]) -> bool:
    """Kubernetes' rule: an empty effect tolerates every effect, an empty key
    with Exists every key; Exists ignores the value, Equal compares it."""
    t_key, operator, t_value, t_effect = toleration
    key, value, effect = taint
    if t_effect and t_effect != effect:
        return False
    if t_key and t_key != key:
        return False
    if operator == "Exists":
        return True
    return t_value == value


@register_filter("TaintToleration")
def taint_toleration(pod: PodInfo) -> NodeCheck | None:
    tolerations = pod.tolerations

    def check(node: NodeInfo) -> str | None:
        for taint in node.taints:  # NoSchedule and NoExecute only
            if not any(tolerates(t, taint) for t in tolerations):
                return untolerated_taint(taint[0], taint[1])
        return None
    return check
