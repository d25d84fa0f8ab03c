"""Host-local IPAM: one address per pod from the node's pod CIDR, kept in a file.

The allocations live in ``<state_dir>/ipam-<network>_<prefix>.json``, rewritten
whole (temporary file, fsync, rename) while holding ``flock`` on a lock file
beside it, so two processes never hand out one address twice and a reader never
sees half a file. The first host address is the gateway (the bridge's); it, the
network and the broadcast address are never handed out. Addresses are handed out
round-robin after the last one given, so an address just released is not reused
at once (a peer may still hold connections to the pod that had it).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from agent.errors import AddressExhaustedError, NetworkError
from agent.network.config import check_pod_uid, gateway_of

_FORMAT_VERSION = 1


class HostLocalIPAM:
    """Addresses of one pod CIDR, keyed by pod UID, persisted under ``state_dir``."""

    def __init__(self, cidr: IPv4Network, state_dir: Path) -> None:
        if cidr.prefixlen > 30:
            raise NetworkError(f"pod CIDR {cidr}: too small, needs at least a /30")
        self.network = cidr
        self.gateway = IPv4Interface(f"{gateway_of(cidr)}/{cidr.prefixlen}")
        stem = f"ipam-{cidr.network_address}_{cidr.prefixlen}"
        self.path = state_dir / f"{stem}.json"
        self._lock_path = state_dir / f"{stem}.lock"

    # Reads --------------------------------------------------------------------

    def lookup(self, pod_uid: str) -> IPv4Interface | None:
        """The pod's address with the CIDR's prefix, or None if it has none."""
        with self._locked(fcntl.LOCK_SH):
            address = self._load()["pods"].get(pod_uid)
        return self._interface(address) if address else None

    def allocations(self) -> dict[str, IPv4Address]:
        """Every pod UID with its address."""
        with self._locked(fcntl.LOCK_SH):
            pods: dict[str, str] = self._load()["pods"]
        return {uid: IPv4Address(addr) for uid, addr in pods.items()}

    # Changes ------------------------------------------------------------------

    def allocate(self, pod_uid: str) -> IPv4Interface:
        """The pod's address: the one it already has (after a restart), or a free one."""
        check_pod_uid(pod_uid)
        with self._locked(fcntl.LOCK_EX):
            data = self._load()
            pods: dict[str, str] = data["pods"]
            if pod_uid in pods:
                return self._interface(pods[pod_uid])
            address = self._next_free(set(pods.values()), data.get("last"))
            pods[pod_uid] = str(address)
            data["last"] = str(address)
            self._store(data)
        return self._interface(str(address))

    def release(self, pod_uid: str) -> IPv4Address | None:
        """Free the pod's address; returns it, or None if the pod had none (idempotent)."""
        with self._locked(fcntl.LOCK_EX):
            data = self._load()
            address = data["pods"].pop(pod_uid, None)
            if address is not None:
                self._store(data)
        return IPv4Address(address) if address else None

    # Inside -------------------------------------------------------------------

    def _next_free(self, taken: set[str], last: str | None) -> IPv4Address:
        first = int(self.gateway.ip) + 1
        end = int(self.network.broadcast_address)  # exclusive
        start = first
        if last is not None and first <= int(IPv4Address(last)) < end - 1:
            start = int(IPv4Address(last)) + 1
        for candidate in _wrapped(start, first, end):
            address = IPv4Address(candidate)
            if str(address) not in taken:
                return address
        raise AddressExhaustedError(
            f"pod CIDR {self.network}: all {end - first} pod addresses are in use "
            f"(allocations in {self.path})"
        )

    def _interface(self, address: str) -> IPv4Interface:
        return IPv4Interface(f"{address}/{self.network.prefixlen}")

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise NetworkError(f"IPAM lock {self._lock_path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return {"version": _FORMAT_VERSION, "cidr": str(self.network), "pods": {}}
        except OSError as e:
            raise NetworkError(f"IPAM state {self.path}: {e.strerror}") from e
        try:
            data = json.loads(raw)
            pods = data["pods"]
            ok = isinstance(pods, dict) and all(isinstance(v, str) for v in pods.values())
        except (ValueError, KeyError, TypeError):
            ok = False
        # Starting afresh over a damaged file could hand a live pod's address to another.
        if not ok:
            raise NetworkError(f"IPAM state {self.path}: not a valid allocations file")
        if data.get("cidr") != str(self.network):
            raise NetworkError(
                f"IPAM state {self.path}: holds {data.get('cidr')}, not {self.network}"
            )
        return dict(data)

    def _store(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
        except OSError as e:
            raise NetworkError(f"IPAM state {self.path}: {e.strerror}") from e


def _wrapped(start: int, first: int, end: int) -> Iterator[int]:
    yield from range(start, end)
    yield from range(first, start)
