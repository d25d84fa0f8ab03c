"""A pod's /etc/hosts, /etc/hostname and /etc/resolv.conf, written for bind mounts.

Each container of the pod gets these three files bind-mounted over its own, so
every container sees the pod's name and address, whatever its image carries.

The resolv.conf follows the pod's dnsPolicy as Kubernetes does (``pod_resolver``):

    ClusterFirst (default)    the cluster DNS, searching <ns>.svc.D, svc.D, D and the
                              node's domains, ndots:5; the node's resolvers for a
                              hostNetwork pod, or when the node has no cluster DNS
    ClusterFirstWithHostNet   the cluster DNS, hostNetwork or not
    Default                   the node's resolvers
    None                      nothing but the pod's dnsConfig

then the pod's dnsConfig is added: nameservers and search domains after those (no
repeats), options by name (the pod's value wins); at most 3 nameservers and 32
search domains are kept, as the resolver reads no more.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import NamedTuple

from agent.errors import NetworkError
from proto.podium.v1 import pod_pb2

HOSTS = "hosts"
HOSTNAME = "hostname"
RESOLV_CONF = "resolv.conf"

_HOSTNAME_MAX = 63  # one DNS label, the kernel's limit on a UTS hostname is 64

CLUSTER_FIRST = "ClusterFirst"
CLUSTER_FIRST_WITH_HOST_NET = "ClusterFirstWithHostNet"
DEFAULT_POLICY = "Default"
NO_POLICY = "None"
DNS_POLICIES = (CLUSTER_FIRST, CLUSTER_FIRST_WITH_HOST_NET, DEFAULT_POLICY, NO_POLICY)
# What glibc's resolver reads (and Kubernetes keeps): more are silently ignored.
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
# A short name ("web", "web.prod") is tried with the search domains first.
CLUSTER_OPTIONS = ("ndots:5",)


class DnsConfig(NamedTuple):
    """Resolver settings: a resolv.conf's three kinds of lines. An option is ``name``
    or ``name:value``, as written in resolv.conf."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


class PodDns(NamedTuple):
    """What of a pod decides its resolv.conf (``pod_dns`` reads it from a Pod)."""

    namespace: str = "default"
    policy: str = CLUSTER_FIRST  # "" is ClusterFirst too
    host_network: bool = False
    config: DnsConfig = DnsConfig()  # the pod's dnsConfig


def pod_dns(pod: pod_pb2.Pod) -> PodDns:
    spec = pod.spec
    options = tuple(f"{o.name}:{o.value}" if o.value else o.name
                    for o in spec.dns_config.options if o.name)
    return PodDns(
        namespace=pod.metadata.namespace or "default",
        policy=spec.dns_policy or CLUSTER_FIRST,
        host_network=spec.host_network,
        config=DnsConfig(tuple(spec.dns_config.nameservers),
                         tuple(spec.dns_config.searches), options),
    )


def pod_resolver(pod: PodDns, node: DnsConfig, cluster_dns: IPv4Address | None,
                 domain: str) -> DnsConfig:
    """The pod's resolver settings by its dnsPolicy (see the module's docstring).

    ``node`` is the node's own (``node_dns``); ``cluster_dns`` None: the node has no
    cluster DNS, so ClusterFirst means the node's resolvers.
    """
    policy = pod.policy or CLUSTER_FIRST
    if policy not in DNS_POLICIES:
        raise NetworkError(
            f"pod dnsPolicy {policy!r}: not one of {', '.join(DNS_POLICIES)}")
    if policy == NO_POLICY:
        base = DnsConfig()
    elif policy == DEFAULT_POLICY or cluster_dns is None or (
            policy == CLUSTER_FIRST and pod.host_network):
        base = node
    else:
        domain = domain.strip(".")
        cluster_searches = (f"{pod.namespace}.svc.{domain}", f"svc.{domain}", domain)
        base = DnsConfig((str(cluster_dns),), cluster_searches + node.searches,
                         CLUSTER_OPTIONS)
    extra = pod.config
    searches = _unique(base.searches + extra.searches)[:MAX_SEARCHES]
    while searches and len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches = searches[:-1]
    return DnsConfig(
        nameservers=_unique(base.nameservers + extra.nameservers)[:MAX_NAMESERVERS],
        searches=searches,
        options=_merge_options(base.options, extra.options),
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """In order, each once, empty ones left out."""
    return tuple(dict.fromkeys(item for item in items if item))


def _merge_options(*groups: Iterable[str]) -> tuple[str, ...]:
    """Options by name, in the order first named; a later value replaces an earlier."""
    merged: dict[str, str] = {}
    for group in groups:
        for option in group:
            name, sep, value = option.partition(":")
            merged[name] = sep + value
    return tuple(name + value for name, value in merged.items())


def pod_hostname(name: str) -> str:
    """The pod's hostname: its name cut to one DNS label (as Kubernetes cuts it)."""
    cut = name[:_HOSTNAME_MAX].rstrip("-.")
    if not cut or not re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", cut):
        raise NetworkError(f"pod name {name!r}: not usable as a hostname")
    return cut


def hosts_file(hostname: str, address: IPv4Address) -> str:
    return (
        "# podium-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        f"{address}\t{hostname}\n"
    )


def node_dns(resolv_conf: str, keep_loopback: bool = False) -> DnsConfig:
    """The node's resolver settings a pod can use.

    Loopback nameservers (a local stub such as systemd-resolved's 127.0.0.53) are
    left out unless ``keep_loopback``: inside a pod's own network namespace they
    would be the pod's own; a hostNetwork pod shares the node's and can use them.
    """
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in resolv_conf.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            try:
                if ip_address(values[0]).is_loopback and not keep_loopback:
                    continue
            except ValueError:
                continue
            nameservers.append(values[0])
        elif key in ("search", "domain"):
            searches = values  # the last of search/domain wins, as in glibc
        elif key == "options":
            options.extend(values)
    return DnsConfig(tuple(nameservers), tuple(searches), tuple(options))


def resolv_conf_file(dns: DnsConfig) -> str:
    lines = [f"nameserver {server}" for server in dns.nameservers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "".join(line + "\n" for line in lines)


def write_pod_files(directory: Path, hostname: str, address: IPv4Address,
                    dns: DnsConfig) -> None:
    """Write the three files into ``directory`` (made if missing), each atomically."""
    _write_files(directory, {
        HOSTS: hosts_file(hostname, address),
        HOSTNAME: hostname + "\n",
        RESOLV_CONF: resolv_conf_file(dns),
    })


def write_host_network_files(directory: Path, node_hosts: str, node_hostname: str,
                             dns: DnsConfig) -> None:
    """The three files for a hostNetwork pod: the node's hosts file and hostname (the
    pod shares its network and UTS namespaces) and the resolv.conf its policy gives."""
    _write_files(directory, {
        HOSTS: node_hosts,
        HOSTNAME: node_hostname + "\n",
        RESOLV_CONF: resolv_conf_file(dns),
    })


def _write_files(directory: Path, contents: Mapping[str, str]) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in contents.items():
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.rename(tmp, directory / name)
    except OSError as e:
        raise NetworkError(f"pod files {directory}: {e.strerror}") from e


def read_node_dns(path: Path, keep_loopback: bool = False) -> DnsConfig:
    try:
        return node_dns(path.read_text(), keep_loopback)
    except FileNotFoundError:
        return DnsConfig()
    except OSError as e:
        raise NetworkError(f"{path}: {e.strerror}") from e
