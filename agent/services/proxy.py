"""The node's Service table: ``rules`` renders it, ``ServiceProxy`` applies it.

Each ``sync(catalog)`` writes the whole table in one ``nft -f -`` transaction
(see ``rules.transaction``); a sync that would write the same rules as the last
one is skipped unless ``reapply_after`` seconds have passed (the catalog's
periodic resync then restores rules someone else changed). ``close()`` deletes
the table. DNAT happens in the kernel: no packet passes through the agent. After a
change, the conntrack entries of UDP flows to endpoints that left are deleted
(``conntrack.py``): else a client keeping its socket would stay with the old pod.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from agent.errors import NetworkError
from agent.network import NetworkConfig
from agent.network.nft import run_nft
from agent.services.catalog import Catalog
from agent.services.conntrack import flush_stale_flows
from agent.services.rules import (
    DnsRedirect,
    PortRule,
    ProxySettings,
    StaleFlows,
    render_catalog,
    stale_udp_flows,
    transaction,
)

log = logging.getLogger("podium.agent.services")

SERVICE_TABLE_SUFFIX = "_svc"

# Deletes the conntrack entries of stale UDP flows in a namespace; how many went.
FlowFlusher = Callable[[Sequence[StaleFlows], Path | None], int]


class ServiceProxy:
    """Programs ``inet <settings.table>`` in the node's network namespace ``netns``."""

    def __init__(self, settings: ProxySettings, netns: Path | None = None, *,
                 reapply_after: float = 20.0,
                 flush_flows: FlowFlusher = flush_stale_flows) -> None:
        self.settings = settings
        self.netns = netns
        self.reapply_after = reapply_after
        self._flush_flows = flush_flows
        # What the last applied table held; None until then (and after close), so
        # the first sync after a start flushes nothing.
        self._last_rules: tuple[PortRule, ...] | None = None
        self._flush_error: str | None = None
        self._lock = threading.Lock()
        self._last_script: str | None = None
        self._last_applied = 0.0
        self._reported: set[str] = set()

    @classmethod
    def for_node(cls, config: NetworkConfig, dns_address: IPv4Address | None = None,
                 dns_port: int = 53) -> ServiceProxy:
        """The proxy for a node's network: table ``<nft_table>_svc`` beside the node's,
        its pod CIDR, and, given the address of the node's DNS server, the cluster DNS
        address (``config.cluster_dns``) redirected there."""
        dns = None
        if config.cluster_dns is not None and dns_address is not None:
            dns = DnsRedirect(config.cluster_dns, dns_address, dns_port)
        settings = ProxySettings(table=config.nft_table + SERVICE_TABLE_SUFFIX,
                                 pod_cidr=config.pod_cidr, dns=dns)
        return cls(settings, config.node_netns)

    @property
    def table(self) -> str:
        return self.settings.table

    def sync(self, catalog: Catalog) -> bool:
        """Program the table for ``catalog``; True if nft was called.

        NetworkError if nft refused the script (the table is then as it was)."""
        ruleset, the_plan = render_catalog(catalog, self.settings)
        self._report(the_plan.skipped)
        with self._lock:
            body = "\n".join(ruleset.lines)
            fresh = time.monotonic() - self._last_applied < self.reapply_after
            if body == self._last_script and fresh:
                return False
            chains, sets = self._existing()
            self._nft(["-f", "-"], transaction(ruleset, self.table, chains, sets))
            self._last_script, self._last_applied = body, time.monotonic()
            # Only now: a flow deleted earlier could be re-created by the old rules.
            self._flush(stale_udp_flows(self._last_rules, the_plan.rules))
            self._last_rules = the_plan.rules
        return True

    def close(self) -> None:
        """Delete the table (idempotent): Services stop answering on this node."""
        with self._lock:
            if self._nft(["list", "table", "inet", self.table], check=False).returncode == 0:
                self._nft(["-f", "-"], f"delete table inet {self.table}\n")
            self._last_script = None
            self._last_rules = None

    # --- inside -------------------------------------------------------------------

    def _report(self, skipped: tuple[str, ...]) -> None:
        """Log each left-out Service port once, not at every sync."""
        for line in skipped:
            if line not in self._reported:
                log.warning("service rules: %s", line)
        self._reported = set(skipped)

    def _flush(self, stale: tuple[StaleFlows, ...]) -> None:
        """Delete the stale flows' conntrack entries; a failure is logged (once while
        it lasts), never raised: the rules are in force, only old flows linger."""
        if not stale:
            return
        try:
            deleted = self._flush_flows(stale, self.netns)
        except Exception as e:  # whatever it is, it must not fail the sync
            if str(e) != self._flush_error:
                log.warning("service rules: %s", e)
            self._flush_error = str(e)
            return
        self._flush_error = None
        if deleted:
            log.info("service rules: %d UDP flow(s) to removed endpoints cleared", deleted)

    def _existing(self) -> tuple[list[str], list[str]]:
        """The table's chains and sets as the kernel has them (none if no table)."""
        done = self._nft(["-t", "-j", "list", "table", "inet", self.table], check=False)
        if done.returncode != 0:
            return [], []
        try:
            items = json.loads(done.stdout)["nftables"]
        except (ValueError, KeyError) as e:
            raise NetworkError(f"nftables table inet {self.table}: unreadable listing") from e
        chains = [i["chain"]["name"] for i in items if "chain" in i]
        sets = [i["set"]["name"] for i in items if "set" in i]
        return chains, sets

    def _nft(self, args: list[str], stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_nft(args, what=f"nftables table inet {self.table}", stdin=stdin,
                       netns=self.netns, check=check)


def remove_node_services(config: NetworkConfig) -> None:
    """Remove what the agent leaves in force when it stops (its Service table and
    its routes), for ``podium down`` and the like; idempotent."""
    from agent.services.routes import RouteSync

    ServiceProxy.for_node(config).close()
    RouteSync("", config.node_netns).close()
