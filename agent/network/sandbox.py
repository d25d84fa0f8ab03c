"""A pod's network sandbox, and the node network all sandboxes hang off.

``PodNetwork`` is the agent's one handle on networking. For the node it keeps the
bridge (holding the pod CIDR's gateway) and the nftables table; for each pod:

    <netns_dir>/<uid>          a network namespace, bind-mounted so it outlives any
                               process; containers join it by path (OCI namespace
                               ``{"type": "network", "path": ...}``)
    veth <prefix><hash>        the host end, a port of the bridge; its peer is the
                               pod's ``eth0``, holding the pod's address, with the
                               default route via the gateway
    <pods_dir>/<uid>/network/  hosts, hostname, resolv.conf for bind mounts (the
                               resolv.conf by the pod's dnsPolicy: ``podfiles``)

and, made apart with ``hold_namespaces`` (a ``hostNetwork`` pod has no network of
its own but still one IPC namespace for all its containers, and its files made
with ``host_network_files``):

    <pods_dir>/<uid>/ns/ipc    the pod's IPC namespace, bind-mounted like the netns
    <pods_dir>/<uid>/ns/uts    its UTS namespace, the pod's hostname set in it once

``teardown`` undoes all of it, and any part of it: a sandbox half made when the
agent crashed is cleaned by the same call.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, NamedTuple

from agent.errors import NetworkError
from agent.network.bridge import ensure_bridge, link_index, netlink_errors
from agent.network.config import NetworkConfig, check_config, check_pod_uid, host_veth_name
from agent.network.ipam import HostLocalIPAM
from agent.network.nat import NatTable
from agent.network.netns import (
    create_namespaces,
    create_netns,
    is_netns,
    remove_namespace,
    remove_netns,
    run_in_netns,
)
from agent.network.podfiles import (
    DnsConfig,
    PodDns,
    pod_hostname,
    pod_resolver,
    read_node_dns,
    write_host_network_files,
    write_pod_files,
)
from agent.network.rtnl import Rtnl

POD_IFNAME = "eth0"
DEFAULT_POD_DNS = PodDns()  # namespace "default", ClusterFirst, no dnsConfig
SHARED_NAMESPACES = ("ipc", "uts")  # held beside the netns


class Sandbox(NamedTuple):
    """What a pod's containers need to know about its network."""

    pod_uid: str
    netns: Path  # join with the OCI config's {"type": "network", "path": netns}
    address: IPv4Interface  # the pod IP with the pod CIDR's prefix
    gateway: IPv4Address
    host_veth: str
    files: Path  # directory holding hosts, hostname, resolv.conf

    @property
    def ip(self) -> IPv4Address:
        return self.address.ip


class PodNamespaces(NamedTuple):
    """The pod-wide namespaces its containers join by path (None: not held)."""

    ipc: Path | None
    uts: Path | None


class PodNetwork:
    """The node's pod networking, as one ``NetworkConfig`` describes it."""

    def __init__(self, config: NetworkConfig) -> None:
        check_config(config)
        self.config = config
        self.ipam = HostLocalIPAM(config.pod_cidr, config.state_dir)
        self.nat = NatTable(config.nft_table, config.pod_cidr, config.node_netns,
                            config.cluster_cidr)

    @property
    def gateway(self) -> IPv4Interface:
        return self.ipam.gateway

    # The node -----------------------------------------------------------------

    def setup_node(self) -> None:
        """Bridge up with the gateway address, nftables table in place (idempotent).

        IP forwarding is left to the caller (``enable_ip_forwarding``): it is a
        node-wide setting.
        """

        def bridge() -> None:
            with _iproute() as ipr:
                ensure_bridge(ipr, self.config.bridge, self.gateway)

        run_in_netns(self.config.node_netns, bridge)
        self.nat.ensure()

    def teardown_node(self) -> None:
        """Remove the nftables table and the bridge (idempotent); pods go first."""
        self.nat.delete()

        def bridge() -> None:
            with Rtnl() as rtnl, netlink_errors(f"device {self.config.bridge}: delete"):
                rtnl.delete_link(self.config.bridge)

        run_in_netns(self.config.node_netns, bridge)

    # Pods ---------------------------------------------------------------------

    def netns_path(self, pod_uid: str) -> Path:
        check_pod_uid(pod_uid)
        return self.config.netns_dir / pod_uid

    def files_dir(self, pod_uid: str) -> Path:
        check_pod_uid(pod_uid)
        return self.config.pods_dir / pod_uid / "network"

    def setup(self, pod_uid: str, pod_name: str, dns: PodDns = DEFAULT_POD_DNS) -> Sandbox:
        """Make the pod's sandbox; on any failure, undo what was made and raise.

        ``dns`` (the pod's namespace, dnsPolicy and dnsConfig) decides its resolv.conf.
        """
        hostname = pod_hostname(pod_name)
        resolver = self.pod_resolver(dns)  # a bad dnsPolicy fails before anything is made
        netns = self.netns_path(pod_uid)
        if netns.exists():
            raise NetworkError(f"pod {pod_uid}: sandbox {netns} exists (tear it down first)")
        try:
            address = self.ipam.allocate(pod_uid)
            sandbox = self._sandbox(pod_uid, address)
            # A socket opened inside the new namespace (by the thread that makes it)
            # configures the pod's side from here, with no thread to enter it again.
            with create_netns(netns, Rtnl) as pod_side:
                run_in_netns(self.config.node_netns, lambda: self._plug(sandbox))
                self._configure_pod_side(sandbox, pod_side)
            write_pod_files(sandbox.files, hostname, address.ip, resolver)
        except BaseException:
            self.teardown(pod_uid)
            raise
        return sandbox

    def host_network_files(self, pod_uid: str, dns: PodDns,
                           node_hosts: Path = Path("/etc/hosts")) -> Path:
        """Write a hostNetwork pod's hosts, hostname and resolv.conf; returns their
        directory (``files_dir``). The hosts file and hostname are the node's; the
        resolv.conf follows the pod's dnsPolicy. Rewritten whole on every call."""
        files = self.files_dir(pod_uid)
        try:
            hosts = node_hosts.read_text()
        except FileNotFoundError:
            hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        except OSError as e:
            raise NetworkError(f"pod {pod_uid}: {node_hosts}: {e.strerror}") from e
        write_host_network_files(files, hosts, os.uname().nodename,
                                 self.pod_resolver(dns._replace(host_network=True)))
        return files

    def pod_resolver(self, dns: PodDns) -> DnsConfig:
        """The pod's resolver settings, from its DNS settings and this node's."""
        # A hostNetwork pod shares the node's namespace, so a loopback stub serves it.
        node = read_node_dns(self.config.resolv_conf, keep_loopback=dns.host_network)
        return pod_resolver(dns, node, self.config.cluster_dns, self.config.cluster_domain)

    def lookup(self, pod_uid: str) -> Sandbox | None:
        """The pod's sandbox if it has one (an agent re-adopting its pods after a restart)."""
        address = self.ipam.lookup(pod_uid)
        if address is None or not is_netns(self.netns_path(pod_uid)):
            return None
        return self._sandbox(pod_uid, address)

    def teardown(self, pod_uid: str) -> None:
        """Remove everything of the pod's sandbox that exists; safe to repeat.

        Every step is tried even when one fails (the first failure is raised after),
        so one broken part never keeps the rest, or the pod's address, alive.
        """
        netns = self.netns_path(pod_uid)
        address = self.ipam.lookup(pod_uid)
        veth = host_veth_name(self.config.veth_prefix, pod_uid)
        files = self.files_dir(pod_uid)

        def unplug() -> None:
            with Rtnl() as rtnl, netlink_errors(f"veth {veth}: delete"):
                rtnl.delete_link(veth)

        def remove_files() -> None:
            shutil.rmtree(files, ignore_errors=True)
            try:
                files.parent.rmdir()  # the pod's directory, unless the agent keeps more there
            except OSError:
                pass

        steps: list[Callable[[], object]] = [
            lambda: run_in_netns(self.config.node_netns, unplug),
            # Removing the namespace takes eth0, and so the veth, with it if unplug failed.
            lambda: remove_netns(netns),
            remove_files,
        ]
        if address is not None:
            steps.insert(1, lambda: self.nat.unpublish_pod(address.ip))
        steps.insert(-1, lambda: self.release_namespaces(pod_uid))
        failures: list[NetworkError] = []
        for step in steps:
            try:
                step()
            except NetworkError as e:
                failures.append(e)
        if failures:
            raise failures[0]
        self.ipam.release(pod_uid)  # last: the address is free only once nothing uses it

    # IPC and UTS ---------------------------------------------------------------

    def namespaces_dir(self, pod_uid: str) -> Path:
        check_pod_uid(pod_uid)
        return self.config.pods_dir / pod_uid / "ns"

    def hold_namespaces(self, pod_uid: str, hostname: str | None,
                        ipc: bool = True) -> PodNamespaces:
        """The pod's IPC namespace (unless not ``ipc``: hostIPC) and, given a hostname,
        its UTS namespace with that hostname (without: the containers keep the node's,
        as with hostNetwork). Made if missing, kept if there; on a failure what this
        call made is removed."""
        held = self.pod_namespaces(pod_uid)
        wanted = [kind for kind, want in (("ipc", ipc), ("uts", hostname is not None)) if want]
        missing = {kind: self.namespaces_dir(pod_uid) / kind
                   for kind in wanted if getattr(held, kind) is None}
        for path in missing.values():
            path.unlink(missing_ok=True)  # a bare file left by a crash
        if missing:
            create_namespaces(missing, hostname)  # all or none
        return self.pod_namespaces(pod_uid)

    def pod_namespaces(self, pod_uid: str) -> PodNamespaces:
        """The pod's IPC and UTS namespaces that exist (an agent re-adopting its pods)."""
        found = {kind: self.namespaces_dir(pod_uid) / kind for kind in SHARED_NAMESPACES}
        ipc, uts = (p if is_netns(p) else None for p in found.values())
        return PodNamespaces(ipc, uts)

    def release_namespaces(self, pod_uid: str) -> None:
        """Unbind and remove the pod's IPC and UTS namespace files; safe to repeat."""
        directory = self.namespaces_dir(pod_uid)
        for kind in SHARED_NAMESPACES:
            remove_namespace(directory / kind)
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise NetworkError(f"pod {pod_uid}: namespaces {directory}: {e.strerror}") from e

    def publish(self, sandbox: Sandbox, container_port: int, host_port: int,
                protocol: str = "TCP") -> None:
        self.nat.publish(sandbox.ip, container_port, host_port, protocol)

    # Inside -------------------------------------------------------------------

    def _sandbox(self, pod_uid: str, address: IPv4Interface) -> Sandbox:
        return Sandbox(
            pod_uid=pod_uid,
            netns=self.netns_path(pod_uid),
            address=address,
            gateway=self.gateway.ip,
            host_veth=host_veth_name(self.config.veth_prefix, pod_uid),
            files=self.files_dir(pod_uid),
        )

    def _plug(self, sandbox: Sandbox) -> None:
        """In the node's namespace: the veth pair, its peer born inside the pod's as eth0."""
        bridge_name, veth = self.config.bridge, sandbox.host_veth
        with Rtnl() as rtnl:
            bridge = link_index(bridge_name)
            if bridge is None:
                raise NetworkError(f"bridge {bridge_name}: missing (set up the node first)")
            with netlink_errors(f"veth {veth}: delete"):
                rtnl.delete_link(veth)  # a leftover of this same pod, from a crash
            fd = os.open(sandbox.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                # Born a port of the bridge, and up: one netlink request, not two.
                with netlink_errors(f"veth {veth}: create on bridge {bridge_name}"):
                    rtnl.add_veth(veth, bridge, POD_IFNAME, fd)
            finally:
                os.close(fd)
            index = link_index(veth)
            if index is None:
                raise NetworkError(f"veth {veth}: created but not found")
            # A pod reaching itself through its Service's DNAT: with bridge netfilter
            # on, the frame goes back out the port it came in on, which the bridge
            # allows only in hairpin mode.
            with netlink_errors(f"veth {veth}: hairpin mode"):
                rtnl.set_hairpin(index)

    def _configure_pod_side(self, sandbox: Sandbox, rtnl: Rtnl) -> None:
        """Through a socket in the pod's namespace: lo and eth0 up, the address, the
        default route."""
        where = f"pod {sandbox.pod_uid}"
        with netlink_errors(f"{where}: lo or {POD_IFNAME} missing in {sandbox.netns}"):
            lo, eth0 = rtnl.index("lo"), rtnl.index(POD_IFNAME)
        with netlink_errors(f"{where}: set lo up"):
            rtnl.set_up(lo)
        with netlink_errors(f"{where}: add {sandbox.address} to {POD_IFNAME}"):
            rtnl.add_address(eth0, sandbox.address)
        with netlink_errors(f"{where}: set {POD_IFNAME} up"):
            rtnl.set_up(eth0)
        with netlink_errors(f"{where}: default route via {sandbox.gateway}"):
            rtnl.add_default_route(sandbox.gateway, eth0)


def _iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()

