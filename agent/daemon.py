"""``Agent``: podium-agent's main object, wiring the node's parts in a safe order.

    start()   1. the runtime's fork server, first: before this process runs any
                 thread (gRPC's included), so shims are never forked from a threaded
                 process
              1b. with a scheduler: register the node (``agent.link``), retried until
                 the scheduler answers; without ``pod_cidr`` its network is the CIDR
                 the scheduler assigns, so nothing of the network is made before
              2. the node network (bridge, NAT table, IP forwarding)
              3. recovery: relist the runtime's containers and the pods' sandboxes
                 and directories, adopt the pods the source still wants (running
                 containers are left running), remove the rest
              4. the gRPC server (``agent.server``)
    run()     the pod loop until ``stop()`` (``agent.podloop``): a step every period,
              and at once when something happens (``agent.watch``)
    close()   the gRPC server and the fork server; pods and their shims keep running,
              so the next agent re-adopts them

Under ``root`` (default ``/run/podium``, as containers do not survive a reboot,
neither do their records):

    runtime/          the runtime's container state
    netns/            the pods' network namespaces
    agent/network/    IPAM allocations
    agent/pods/<uid>/ each pod's files and logs (see ``agent.pods.worker``)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.network.config import DEFAULT_CLUSTER_DOMAIN
from agent.podloop import PodLoop, run_in_thread
from agent.recovery import plan_recovery, pod_uid_of, pod_uids_on_disk, remove_leftover
from agent.watch import Waker

if TYPE_CHECKING:
    import grpc

    from agent.dns import DnsServer
    from agent.execs import ExecService
    from agent.link import SchedulerLink
    from agent.network import PodNetwork
    from agent.pods import PodWorker, WorkerDeps
    from agent.server import HealthLike
    from agent.services import ClusterCatalog
    from agent.sources import PodSource, StaticManifestSource
    from proto.podium.v1 import node_pb2, pod_pb2, service_pb2
    from runtime.api import Runtime
    from runtime.forkserver import ForkServer
    from runtime.state import State

log = logging.getLogger("podium.agent")

DEFAULT_ROOT = Path("/run/podium")
DEFAULT_LISTEN = "0.0.0.0:7401"
DEFAULT_STANDALONE_CIDR = IPv4Network("10.88.0.0/24")
DEFAULT_MANIFESTS = Path("/etc/podium/manifests")
DEFAULT_IMAGE_STORE = Path("/var/lib/podium/images")
LOOP_STALLED = 120.0  # seconds without a loop step before the node says it is not Ready
# New pods whose first sync may run at once (each on its own thread; the fork
# server starts their containers side by side).
STARTERS = 4


class AgentConfig(NamedTuple):
    manifests: Path = DEFAULT_MANIFESTS
    listen: str = DEFAULT_LISTEN
    root: Path = DEFAULT_ROOT
    # None: the scheduler's assignment (with ``scheduler``), else the standalone default.
    pod_cidr: IPv4Network | None = DEFAULT_STANDALONE_CIDR
    bridge: str = "podium0"
    cgroup_parent: str = "podium"
    node_name: str = ""
    image_store: Path = DEFAULT_IMAGE_STORE
    nft_table: str = "podium"
    veth_prefix: str = "pd"
    period: float = 0.1  # seconds between loop steps
    manifest_poll: float = 0.1  # seconds between scans of the manifest directory (a few stats)
    scheduler: str = ""  # the scheduler's address; "": standalone, static pods only
    node_ip: str = ""  # the node's InternalIP; "": the default route's interface address
    sync_timeout: float = 10.0  # seconds recovery waits for the scheduler's list of pods
    # With a scheduler: answer the cluster DNS on the bridge address at this port, and
    # point ClusterFirst pods at it. False: pods get the node's resolvers.
    cluster_dns: bool = True
    dns_port: int = 53
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.waker = Waker()  # wakes the loop before its period is over
        self.forkserver: ForkServer | None = None
        self.server: grpc.Server | None = None
        self.port = 0
        self.health: HealthLike | None = None
        self.execs: ExecService | None = None  # Exec calls; built with the pod parts
        self._postponed: set[str] = set()  # leftovers kept while a source was incomplete
        self.link: SchedulerLink | None = None
        self.pod_cidr: IPv4Network = config.pod_cidr or DEFAULT_STANDALONE_CIDR
        self.catalog: ClusterCatalog | None = None  # Services, Endpoints, Nodes
        self.dns: DnsServer | None = None

    @property
    def pods_dir(self) -> Path:
        return self.config.root / "agent" / "pods"

    @property
    def node_name(self) -> str:
        return self.config.node_name

    @property
    def state_root(self) -> Path:
        return self.config.root

    @property
    def cgroup_parent(self) -> str:
        return self.config.cgroup_parent

    def start(self) -> None:
        from runtime.forkserver import ForkServer

        self.forkserver = ForkServer.start()
        try:
            self._connect()
            self._build()
            self._start_services()
            self._recover()
            self._serve()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        """Register with the scheduler (if any), taking its pod CIDR unless one was given;
        the link's threads start here so the list of pods is there for recovery."""
        from agent.link import SchedulerLink

        c = self.config
        if not c.scheduler:
            return
        self.link = SchedulerLink(c.scheduler, c.node_name, self._node_status,
                                  pod_cidr=str(c.pod_cidr) if c.pod_cidr else "",
                                  stop=self.stop_event)
        node = self.link.register()
        self.pod_cidr = IPv4Network(node.spec.pod_cidr)
        self.link.start()

    def node_status(self) -> node_pb2.NodeStatus:
        """The node's status as the scheduler is told it (Stats shows it too)."""
        return self._node_status(None)

    def _node_status(self, previous: node_pb2.NodeStatus | None) -> node_pb2.NodeStatus:
        from agent.node import agent_endpoint, node_status, read_host

        loop: PodLoop | None = getattr(self, "loop", None)
        # A loop stuck this long (a sync that hangs) is not running pods any more.
        stalled = (loop is not None and loop.last_step > 0
                   and loop.clock() - loop.last_step > LOOP_STALLED)
        return node_status(read_host(self.config.root, self.config.node_ip),
                           endpoint=agent_endpoint(self.config.listen, self.port),
                           ready=not stalled, previous=previous,
                           ready_message="the pod loop is stalled" if stalled else "")

    def _build(self) -> None:
        from agent.network import NetworkConfig, PodNetwork, enable_ip_forwarding
        from agent.pods import HostVolumes, RuntimeContainers, StoreImages, WorkerDeps
        from agent.sources import CombinedSource, StaticManifestSource
        from runtime.api import Runtime
        from runtime.images import ImageStore

        c = self.config
        assert self.forkserver is not None
        self.rt: Runtime = Runtime(root=c.root / "runtime", cgroup_parent=c.cgroup_parent)
        self.net_config = NetworkConfig(
            pod_cidr=self.pod_cidr, bridge=c.bridge, nft_table=c.nft_table,
            veth_prefix=c.veth_prefix, state_dir=c.root / "agent" / "network",
            netns_dir=c.root / "netns", pods_dir=self.pods_dir,
            **self._cluster_network())
        self.net: PodNetwork = PodNetwork(self.net_config)
        self.net.setup_node()
        enable_ip_forwarding()
        self.deps: WorkerDeps = WorkerDeps(
            sandbox=self.net, containers=RuntimeContainers(self.rt, self.forkserver.spawn_shim),
            images=StoreImages(ImageStore(c.image_store)), volumes=HostVolumes(),
            pods_dir=self.pods_dir, cgroup_parent=c.cgroup_parent,
            host_ip=str(self.net.gateway.ip))
        if self.link is not None:  # else the default: events are only logged
            self.deps.recorder = self.link.recorder
            self.link.source.notify = self.waker.wake
        self.static = StaticManifestSource(c.manifests, poll_interval=c.manifest_poll,
                                           watch=True)
        self.source: PodSource = (self.static if self.link is None
                                  else CombinedSource(self.static, self.link.source))
        self.loop = PodLoop(self.source, self._make_worker, spawn=run_in_thread,
                            listener=self.link, starters=STARTERS, wake=self.waker.wake,
                            sync_period=c.period)
        from agent.execs import make_exec_service

        self.execs = make_exec_service(self.forkserver, self.rt, self.deps.images, self.pods_dir)

    def _cluster_network(self) -> dict[str, Any]:
        """NetworkConfig's cluster settings, as the scheduler gave them at registration."""
        link = self.link
        if link is None or not link.service_cidr:
            return {}  # standalone: this node's pods only, the node's resolvers
        services = IPv4Network(link.service_cidr)
        return {"cluster_cidr": IPv4Network(link.cluster_cidr) if link.cluster_cidr else None,
                "service_cidr": services,
                # The 10th address, as the scheduler keeps it out of ClusterIPs.
                "cluster_dns": services[10] if self.config.cluster_dns else None,
                "cluster_domain": self.config.cluster_domain}

    def _start_services(self) -> None:
        """With a scheduler: the node's part of Services (nftables), the cluster DNS
        and the routes to other nodes' pods, all following the scheduler's objects."""
        from agent.network.netns import run_in_netns
        from agent.network.podfiles import read_node_dns
        from agent.services import ClusterCatalog, RouteSync, ServiceProxy

        c, net = self.config, self.net_config
        if self.link is None:
            return
        self.catalog = ClusterCatalog(c.scheduler, self.stop_event)
        gateway = self.net.gateway.ip
        if net.cluster_dns is not None:
            from agent.dns import DnsServer

            catalog = self.catalog
            # Loopback resolvers (a local stub) work here: the server runs in the
            # node's namespace. The cluster's own addresses would be a loop.
            upstreams = [s for s in read_node_dns(net.resolv_conf, keep_loopback=True)
                         .nameservers if s not in (str(net.cluster_dns), str(gateway))]
            self.dns = DnsServer(address=str(gateway), port=c.dns_port,
                                 records=lambda: _records(catalog), upstreams=upstreams,
                                 domain=net.cluster_domain)
            run_in_netns(net.node_netns, self.dns.start)
        proxy = ServiceProxy.for_node(net, dns_address=gateway, dns_port=c.dns_port)
        routes = RouteSync(c.node_name, net.node_netns, service_cidr=net.service_cidr,
                           bridge=net.bridge)
        self.catalog.subscribe(proxy.sync)
        self.catalog.subscribe(lambda snapshot: routes.sync(snapshot.nodes.values()))
        self.catalog.start()

    def _make_worker(self, pod: pod_pb2.Pod) -> PodWorker:
        from agent.pods import PodWorker as Worker

        uid = pod.metadata.uid
        if uid in self._postponed:
            # Left alone at start while the manifests had errors, and wanted again now.
            self._postponed.discard(uid)
            states = {s.id: s for s in self.rt.containers()}
            adopted = self._adopt(pod, [c for c in states if pod_uid_of(c) == uid], states)
            if adopted is not None:
                return adopted
        return Worker(pod, self.deps)

    def _recover(self) -> None:
        from agent.sources import PodEventType

        # Without the scheduler's whole list, pods not in it may still be wanted there.
        unlisted = (self.link is not None
                    and not self.link.source.wait_synced(self.config.sync_timeout))
        events = self.source.poll()
        wanted = {e.pod.metadata.uid: (e.pod, e.source) for e in events
                  if e.type is PodEventType.ADD and e.pod is not None}
        states = {s.id: s for s in self.rt.containers()}
        plan = plan_recovery(wanted, states,
                             pod_uids_on_disk(self.pods_dir, self.net_config.netns_dir))
        for uid, container_ids in plan.adopt.items():
            pod, source = wanted[uid]
            worker = self._adopt(pod, container_ids, states)
            if worker is not None:
                self.loop.insert(pod, worker, source)
        if unlisted or any(e.type is PodEventType.ERROR for e in events):
            # A manifest that does not parse (or a missing directory), or a scheduler
            # not heard yet, may be what still wants these pods: leave them, rather than
            # stop pods on a typo or an outage; a pod wanted again later is adopted then
            # (``_make_worker``).
            if plan.leftovers:
                why = ("the scheduler's list of pods is not in yet" if unlisted
                       else "manifests have errors")
                log.warning("%s: leaving pods %s as they are", why,
                            ", ".join(plan.leftovers))
            self._postponed = set(plan.leftovers)
        else:
            for uid, container_ids in plan.leftovers.items():
                log.info("pod %s: no longer wanted, removing what is left of it", uid)
                self._remove(uid, container_ids)
        self.loop.apply(events)

    def _adopt(self, pod: pod_pb2.Pod, container_ids: list[str],
               states: Mapping[str, State]) -> PodWorker | None:
        """A worker holding what is left of ``pod`` on the node; None: start it afresh."""
        from agent.pods import PodWorker as Worker

        uid = pod.metadata.uid
        if not container_ids and not (self.pods_dir / uid).exists():
            if self.net.netns_path(uid).exists():  # a sandbox half made by a crash
                self._remove(uid, [])
            return None  # nothing else of it on the node: the loop makes it afresh
        sandbox = self.net.lookup(uid)
        if sandbox is None and not pod.spec.host_network:
            # Containers without their network cannot be kept: start the pod again.
            log.warning("pod %s: no sandbox left, starting it afresh", uid)
            self._remove(uid, container_ids)
            return None
        worker = Worker(pod, self.deps)
        started = {cid: _created(states[cid].created) for cid in container_ids}
        worker.adopt(sandbox, container_ids, {k: v for k, v in started.items() if v is not None})
        log.info("pod %s: adopted %s", uid, ", ".join(container_ids) or "its files")
        return worker

    def _remove(self, uid: str, container_ids: list[str]) -> None:
        remove_leftover(uid, container_ids, containers=self.deps.containers,
                        images=self.deps.images, sandbox=self.net, pods_dir=self.pods_dir,
                        cgroup_parent=self.config.cgroup_parent, log=log.error)

    def _serve(self) -> None:
        from agent.server import make_server

        self.server, self.port, self.health = make_server(self, self.config.listen)
        self.server.start()
        log.info("podium-agent serving on %s", self.config.listen)

    def run(self) -> None:
        """The pod loop, until ``stop_event`` is set (by a signal, or a test)."""
        from agent.server import set_health

        while not self.stop_event.is_set():
            self.loop.step()
            if self._postponed and self._listed():
                self._remove_postponed()
            if self.health is not None:
                set_health(self.health, True)
            watch = self.static.fileno()
            self.waker.wait(self.config.period, () if watch is None else (watch,))

    def stop(self) -> None:
        """Make ``run`` return (safe from a signal handler)."""
        self.stop_event.set()
        self.waker.wake()

    def _listed(self) -> bool:
        """The scheduler's whole list of pods has reached the loop, and no manifest is
        in error: a leftover nobody claimed by now is not wanted."""
        return (self.link is not None and self.link.source.synced
                and not self.loop.source_errors)

    def _remove_postponed(self) -> None:
        states = {s.id: s for s in self.rt.containers()}
        for uid in sorted(self._postponed):
            log.info("pod %s: not in the scheduler's list, removing what is left of it", uid)
            self._remove(uid, [c for c in states if pod_uid_of(c) == uid])
        self._postponed.clear()

    def close(self) -> None:
        """Stop serving; the pods keep running for the next agent to adopt, and the
        node's Service rules and routes stay in force until it does (as kube-proxy's)."""
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None
        if self.dns is not None:
            self.dns.close()
            self.dns = None
        if self.link is not None:
            self.link.close()  # the scheduler then sees the node's lease run out
            self.link = None
        if self.server is not None:
            from agent.server import set_health

            if self.health is not None:
                set_health(self.health, False)
            self.server.stop(grace=1).wait()
            self.server = None
        if self.execs is not None:
            self.execs.close()  # its helpers end, so the fork server can stop
        if self.forkserver is not None:
            self.forkserver.close()
            self.forkserver = None
        static: StaticManifestSource | None = getattr(self, "static", None)
        if static is not None:
            static.close()
        self.waker.close()


def _records(catalog: ClusterCatalog) -> tuple[Mapping[tuple[str, str], service_pb2.Service],
                                              Mapping[tuple[str, str], service_pb2.Endpoints]]:
    snapshot = catalog.snapshot()
    return snapshot.services, snapshot.endpoints


def _created(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
