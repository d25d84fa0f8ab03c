"""What placement knows of the cluster: nodes, and what the pods bound to them use.

A `Snapshot` is built from a list of nodes and pods and then kept current
from watch changes, each applied in O(1) (a node's pods are a dict, its sums
are counters). The facts decisions need are extracted from the messages once,
when a change arrives, into `NodeInfo` and `PodInfo`, so that filtering a node
is a few attribute reads and never parses a quantity.

Pods in a terminal phase (Succeeded, Failed) use nothing: their containers
are gone. Pods being deleted still count until they are removed, because their
containers may still run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from proto.podium.v1 import node_pb2, pod_pb2
from proto.quantity import QuantityError, parse_bytes, parse_milli_cpu
from scheduler.objects import DEFAULT_NAMESPACE, Key

# Kubernetes' default max-pods, for a node that reports no "pods" quantity.
DEFAULT_MAX_PODS = 110
# Scoring counts a pod without requests as using this much, so that pods
# without requests still spread by LeastAllocated (Kubernetes does the same).
SCORE_DEFAULT_MILLI_CPU = 100
SCORE_DEFAULT_MEMORY = 200 * 1024 * 1024

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_WILDCARD_IPS = frozenset({"", "0.0.0.0", "::"})

# (protocol, host ip, host port); the ip is "" for every address.
HostPort = tuple[str, str, int]


def pod_key(pod: pod_pb2.Pod) -> Key:
    return Key("Pod", pod.metadata.namespace or DEFAULT_NAMESPACE, pod.metadata.name)


def _container_requests(c: pod_pb2.Container, where: str) -> tuple[int, int]:
    """A container's cpu (milli) and memory (bytes) requests; a resource with a
    limit but no request requests its limit, as Kubernetes defaults it."""
    res = c.resources
    cpu_text = res.requests.get("cpu") or res.limits.get("cpu") or ""
    mem_text = res.requests.get("memory") or res.limits.get("memory") or ""
    try:
        cpu = parse_milli_cpu(cpu_text) if cpu_text else 0
    except QuantityError as e:
        raise QuantityError(f"{where}.resources cpu: {e}") from None
    try:
        mem = parse_bytes(mem_text) if mem_text else 0
    except QuantityError as e:
        raise QuantityError(f"{where}.resources memory: {e}") from None
    return cpu, mem


def pod_requests(spec: pod_pb2.PodSpec) -> tuple[int, int]:
    """(milli-cpu, memory bytes): the sum over containers, or the largest init
    container if that is more, since init containers run one at a time before
    the others. QuantityError names the container."""
    cpu = mem = 0
    for i, c in enumerate(spec.containers):
        c_cpu, c_mem = _container_requests(c, f"containers[{i}]")
        cpu += c_cpu
        mem += c_mem
    for i, c in enumerate(spec.init_containers):
        c_cpu, c_mem = _container_requests(c, f"initContainers[{i}]")
        cpu = max(cpu, c_cpu)
        mem = max(mem, c_mem)
    return cpu, mem


def pod_host_ports(spec: pod_pb2.PodSpec) -> tuple[HostPort, ...]:
    ports: list[HostPort] = []
    for c in spec.containers:
        for p in c.ports:
            # With the node's network, every container port is a node port.
            port = p.host_port or (p.container_port if spec.host_network else 0)
            if port:
                ip = "" if p.host_ip in _WILDCARD_IPS else p.host_ip
                ports.append((p.protocol or "TCP", ip, port))
    return tuple(ports)


def controller_uid(pod: pod_pb2.Pod) -> str:
    for ref in pod.metadata.owner_references:
        if ref.controller:
            return ref.uid
    return ""


@dataclass(slots=True)
class PodInfo:
    """The facts of one pod that placement uses, read once from the message."""

    key: Key
    node_name: str
    milli_cpu: int
    memory: int
    host_ports: tuple[HostPort, ...]
    controller: str
    node_selector: dict[str, str]
    # (key, operator, value, effect)
    tolerations: tuple[tuple[str, str, str, str], ...]
    # Whether it uses its node's resources (bound and not terminal).
    active: bool

    @classmethod
    def of(cls, pod: pod_pb2.Pod) -> PodInfo:
        """QuantityError names the pod and the container whose requests do not parse."""
        spec = pod.spec
        key = pod_key(pod)
        try:
            cpu, mem = pod_requests(spec)
        except QuantityError as e:
            raise QuantityError(f"pod {key.namespace}/{key.name}: {e}") from None
        return cls(
            key=key,
            node_name=spec.node_name,
            milli_cpu=cpu,
            memory=mem,
            host_ports=pod_host_ports(spec),
            controller=controller_uid(pod),
            node_selector=dict(spec.node_selector),
            tolerations=tuple((t.key, t.operator or "Equal", t.value, t.effect)
                              for t in spec.tolerations),
            active=bool(spec.node_name) and pod.status.phase not in TERMINAL_PHASES,
        )


def _quantity(status: node_pb2.NodeStatus, name: str) -> str:
    return status.allocatable.get(name) or status.capacity.get(name) or ""


@dataclass(slots=True, eq=False)
class NodeInfo:
    """One node's facts and the sums over the pods bound to it."""

    name: str
    known: bool = False  # False while only pods name it (the Node is not listed)
    ready: bool = False
    unschedulable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    # NoSchedule and NoExecute taints only: (key, value, effect)
    taints: tuple[tuple[str, str, str], ...] = ()
    alloc_milli_cpu: int = 0
    alloc_memory: int = 0
    alloc_pods: int = 0
    # Sums over the active pods bound here.
    milli_cpu: int = 0
    memory: int = 0
    pod_count: int = 0
    score_milli_cpu: int = 0
    score_memory: int = 0
    # (protocol, port) -> Counter of host ips in use ("" = every address)
    ports: dict[tuple[str, int], Counter[str]] = field(default_factory=dict)
    # controller uid -> pods of it here
    controllers: Counter[str] = field(default_factory=Counter)
    pods: dict[Key, PodInfo] = field(default_factory=dict)

    def set_node(self, node: node_pb2.Node) -> bool:
        """Reads the node's facts; True if any that placement uses changed."""
        status = node.status
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
        taints = tuple((t.key, t.value, t.effect) for t in node.spec.taints
                       if t.effect in ("NoSchedule", "NoExecute"))
        try:
            cpu_text = _quantity(status, "cpu")
            cpu = parse_milli_cpu(cpu_text) if cpu_text else 0
        except QuantityError:
            cpu = 0  # an unreadable allocatable offers nothing rather than everything
        try:
            mem_text = _quantity(status, "memory")
            mem = parse_bytes(mem_text) if mem_text else 0
        except QuantityError:
            mem = 0
        try:
            pods_text = _quantity(status, "pods")
            pods = int(parse_bytes(pods_text)) if pods_text else DEFAULT_MAX_PODS
        except QuantityError:
            pods = 0
        labels = dict(node.metadata.labels)
        before = (self.known, self.ready, self.unschedulable, self.labels, self.taints,
                  self.alloc_milli_cpu, self.alloc_memory, self.alloc_pods)
        self.known = True
        self.ready = ready
        self.unschedulable = node.spec.unschedulable
        self.labels = labels
        self.taints = taints
        self.alloc_milli_cpu = cpu
        self.alloc_memory = mem
        self.alloc_pods = pods
        return before != (True, ready, self.unschedulable, labels, taints, cpu, mem, pods)

    def host_port_free(self, want: HostPort) -> bool:
        used = self.ports.get((want[0], want[2]))
        if not used:
            return True
        if want[1] == "":  # every address: collides with any use of the port
            return False
        return used[""] == 0 and used[want[1]] == 0

    def add_pod(self, p: PodInfo) -> None:
        self.pods[p.key] = p
        if not p.active:
            return
        self.milli_cpu += p.milli_cpu
        self.memory += p.memory
        self.pod_count += 1
        self.score_milli_cpu += p.milli_cpu or SCORE_DEFAULT_MILLI_CPU
        self.score_memory += p.memory or SCORE_DEFAULT_MEMORY
        for proto, ip, port in p.host_ports:
            self.ports.setdefault((proto, port), Counter())[ip] += 1
        if p.controller:
            self.controllers[p.controller] += 1

    def remove_pod(self, key: Key) -> PodInfo | None:
        p = self.pods.pop(key, None)
        if p is None or not p.active:
            return p
        self.milli_cpu -= p.milli_cpu
        self.memory -= p.memory
        self.pod_count -= 1
        self.score_milli_cpu -= p.milli_cpu or SCORE_DEFAULT_MILLI_CPU
        self.score_memory -= p.memory or SCORE_DEFAULT_MEMORY
        for proto, ip, port in p.host_ports:
            used = self.ports[(proto, port)]
            used[ip] -= 1
            if used[ip] <= 0:
                del used[ip]
            if not used:
                del self.ports[(proto, port)]
        if p.controller:
            self.controllers[p.controller] -= 1
            if self.controllers[p.controller] <= 0:
                del self.controllers[p.controller]
        return p


class Snapshot:
    """Nodes by name, in an order that decisions rotate through, and the
    bound pods. Not thread-safe: one loop owns it."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        # The known nodes, for sampling; removal swaps with the last (O(1)).
        self._order: list[NodeInfo] = []
        self._pos: dict[str, int] = {}
        self._pod_nodes: dict[Key, str] = {}

    @classmethod
    def build(cls, nodes: list[node_pb2.Node], pods: list[pod_pb2.Pod]) -> Snapshot:
        snap = cls()
        for node in nodes:
            snap.set_node(node)
        for pod in pods:
            snap.set_pod(pod)
        return snap

    # --- reading ---

    def __len__(self) -> int:
        return len(self._order)

    @property
    def order(self) -> list[NodeInfo]:
        """The known nodes in sampling order (do not modify)."""
        return self._order

    def node(self, name: str) -> NodeInfo | None:
        info = self._nodes.get(name)
        return info if info is not None and info.known else None

    def bound_node(self, key: Key) -> str | None:
        return self._pod_nodes.get(key)

    # --- changes ---

    def set_node(self, node: node_pb2.Node) -> bool:
        """Adds or updates a node; True if anything placement uses changed."""
        name = node.metadata.name
        info = self._nodes.get(name)
        if info is None:
            info = self._nodes[name] = NodeInfo(name)
        changed = info.set_node(node)
        if name not in self._pos:
            self._pos[name] = len(self._order)
            self._order.append(info)
        return changed

    def remove_node(self, name: str) -> None:
        info = self._nodes.get(name)
        if info is None:
            return
        i = self._pos.pop(name, None)
        if i is not None:
            last = self._order.pop()
            if last is not info:
                self._order[i] = last
                self._pos[last.name] = i
        if info.pods:
            # Its pods keep their accounting in case the node comes back.
            info.known = False
        else:
            del self._nodes[name]

    def set_pod(self, pod: pod_pb2.Pod) -> bool:
        """Adds or updates a pod; unbound pods are ignored. True if a node's
        use went down (a pod left it or finished): room may have opened."""
        key = pod_key(pod)
        try:
            p = PodInfo.of(pod)
        except QuantityError:
            # Validation keeps such pods out; one that slips through uses nothing.
            p = PodInfo(key, pod.spec.node_name, 0, 0, (), "", {}, (), False)
        freed = self._drop(key)
        if p.node_name:
            info = self._nodes.get(p.node_name)
            if info is None:
                info = self._nodes[p.node_name] = NodeInfo(p.node_name)
            info.add_pod(p)
            self._pod_nodes[key] = p.node_name
            if freed is not None and freed.active and freed.node_name == p.node_name and (
                    p.active and freed.milli_cpu <= p.milli_cpu and freed.memory <= p.memory
                    and freed.host_ports == p.host_ports):
                return False  # same node, no less use: nothing opened
        return freed is not None and freed.active

    def remove_pod(self, key: Key) -> bool:
        """True if the pod used a node's resources."""
        freed = self._drop(key)
        return freed is not None and freed.active

    def _drop(self, key: Key) -> PodInfo | None:
        name = self._pod_nodes.pop(key, None)
        if name is None:
            return None
        info = self._nodes[name]
        p = info.remove_pod(key)
        if not info.known and not info.pods:
            del self._nodes[name]
        return p
