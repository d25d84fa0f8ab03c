"""The cluster's layout as the Vagrantfile derives it from each node's index
(0 is the control node); the VM tier provisions its guests with the same arguments."""

from __future__ import annotations

SUBNET = "192.168.56"
CONTROL_IP = f"{SUBNET}.10"
SCHEDULER = f"{CONTROL_IP}:7400"


def node_name(index: int) -> str:
    return "control" if index == 0 else f"worker-{index}"


def node_ip(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


# The guests run under software emulation, some twenty times slower than a VM with
# KVM: a restarted agent takes over 10 s to heartbeat again, so the default 5 s + 5 s
# would evict its pods. The Vagrantfile's PODIUM_EVICTION_TIMEOUT=60, as a user of
# such slow VMs would set.
EVICTION_TIMEOUT = "60"


def provision_args(index: int) -> list[str]:
    """deploy/provision.sh's arguments for node ``index``, as in the Vagrantfile (with
    PODIUM_EVICTION_TIMEOUT set)."""
    args = ["--role", "control" if index == 0 else "worker", "--scheduler", SCHEDULER,
            "--node-name", node_name(index), "--node-ip", node_ip(index),
            "--pod-cidr", f"10.88.{10 + index}.0/24"]
    if index == 0:
        args += ["--eviction-timeout", EVICTION_TIMEOUT]
    return args
