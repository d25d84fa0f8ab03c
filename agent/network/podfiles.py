"""A pod's /etc/hosts, /etc/hostname and /etc/resolv.conf, written for bind mounts.

Each container of the pod gets these three files bind-mounted over its own, so
every container sees the pod's name and address, whatever its image carries.
"""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import NamedTuple

from agent.errors import NetworkError

HOSTS = "hosts"
HOSTNAME = "hostname"
RESOLV_CONF = "resolv.conf"

_HOSTNAME_MAX = 63  # one DNS label, the kernel's limit on a UTS hostname is 64


class DnsConfig(NamedTuple):
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


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


def node_dns(resolv_conf: str) -> DnsConfig:
    """The node's resolver settings a pod can use.

    Loopback nameservers (a local stub such as systemd-resolved's 127.0.0.53) are
    left out: inside the pod's network namespace they would be the pod's own.
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
                if ip_address(values[0]).is_loopback:
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
    contents = {
        HOSTS: hosts_file(hostname, address),
        HOSTNAME: hostname + "\n",
        RESOLV_CONF: resolv_conf_file(dns),
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in contents.items():
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.rename(tmp, directory / name)
    except OSError as e:
        raise NetworkError(f"pod files {directory}: {e.strerror}") from e


def read_node_dns(path: Path) -> DnsConfig:
    try:
        return node_dns(path.read_text())
    except FileNotFoundError:
        return DnsConfig()
    except OSError as e:
        raise NetworkError(f"{path}: {e.strerror}") from e
