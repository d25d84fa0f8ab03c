"""Pod networking on the real kernel, all of it inside a test "node" network namespace.

Each test makes its own node namespace (bound under the test's temporary
directory as ``ptnode``), and, where traffic from beyond the node is needed, an
"outside" namespace joined to the node by a veth pair (``ptup0``/``ptup1``). The
bridge, veths and nftables table live in the node's namespace and carry ``pt``
names; the host's own network is never touched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.errors import NetworkError, PortConflictError
from agent.network import (
    HostLocalIPAM,
    NetworkConfig,
    PodNetwork,
    create_netns,
    enable_ip_forwarding,
    host_veth_name,
    ip_forwarding,
    is_netns,
    remove_netns,
    run_in_netns,
)
from agent.network.netns import create_namespaces
from agent.network.rtnl import Rtnl
from tests.conftest import need, need_root

pytestmark = pytest.mark.root

POD_CIDR = IPv4Network("10.88.7.0/24")
UPLINK_NODE = IPv4Interface("10.250.7.1/24")  # the node's "physical" address
UPLINK_OUTSIDE = IPv4Interface("10.250.7.2/24")  # a machine beyond the node


def run(netns: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``netns`` (a process started from a thread that entered it)."""
    done = run_in_netns(
        netns, lambda: subprocess.run(argv, capture_output=True, text=True, timeout=20)
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {netns}: {done.stderr.strip()}")
    return done


def ping(netns: Path, address: object) -> bool:
    return run(netns, "busybox", "ping", "-c1", "-W1", str(address), check=False).returncode == 0


def ip_json(netns: Path, *argv: str) -> Any:
    return json.loads(run(netns, "ip", "-j", *argv).stdout)


def links(netns: Path) -> set[str]:
    return {link["ifname"] for link in ip_json(netns, "link", "show")}


# A TCP server for one connection: says "ready" once listening, then answers with
# what it knows (its name and the peer's address) and exits.
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
print("ready", flush=True)
s.settimeout(15)
c, peer = s.accept()
c.sendall(f"{sys.argv[2]} {peer[0]}".encode())
c.close()
"""


@dataclass
class Node:
    """One test node: its namespace, its network, and everything to clean after."""

    tmp: Path
    netns: Path
    net: PodNetwork
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    extra_netns: list[Path] = field(default_factory=list)

    def serve(self, netns: Path, port: int, name: str) -> None:
        """Start SERVER inside ``netns`` and wait until it listens."""

        def start() -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-c", SERVER, str(port), name],
                stdout=subprocess.PIPE, text=True,
            )

        server = run_in_netns(netns, start)
        self.servers.append(server)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"

    def outside(self) -> Path:
        """An "outside" namespace joined to the node by ``ptup0`` (node) / ``ptup1``."""
        outside = self.tmp / "ptoutside"
        create_netns(outside)
        self.extra_netns.append(outside)
        run(self.netns, "ip", "link", "add", "ptup0", "type", "veth", "peer", "name", "ptup1",
            "netns", str(outside))
        run(self.netns, "ip", "addr", "add", str(UPLINK_NODE), "dev", "ptup0")
        run(self.netns, "ip", "link", "set", "ptup0", "up")
        run(outside, "ip", "link", "set", "lo", "up")
        run(outside, "ip", "addr", "add", str(UPLINK_OUTSIDE), "dev", "ptup1")
        run(outside, "ip", "link", "set", "ptup1", "up")
        return outside


def connect(netns: Path, address: object, port: int) -> str:
    """Connect from ``netns`` and return what the server said."""

    def talk() -> str:
        with socket.create_connection((str(address), port), timeout=5) as conn:
            return conn.recv(200).decode()

    return run_in_netns(netns, talk)


@pytest.fixture
def node(tmp_dir: Path) -> Iterator[Node]:
    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    need(shutil.which("busybox") is not None, "needs busybox (for ping)")
    netns = tmp_dir / "ptnode"
    create_netns(netns)
    config = NetworkConfig(
        pod_cidr=POD_CIDR,
        bridge="ptbr0",
        nft_table="ptnat",
        veth_prefix="pt",
        state_dir=tmp_dir / "state",
        netns_dir=tmp_dir / "netns",
        pods_dir=tmp_dir / "pods",
        node_netns=netns,
        resolv_conf=tmp_dir / "resolv.conf",
    )
    (tmp_dir / "resolv.conf").write_text(
        "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.test\n"
    )
    the_node = Node(tmp=tmp_dir, netns=netns, net=PodNetwork(config))
    try:
        run(netns, "ip", "link", "set", "lo", "up")
        yield the_node
    finally:
        _cleanup(the_node)


def _cleanup(node: Node) -> None:
    """Remove everything, each step tried even when an earlier one fails."""
    steps: list[Callable[[], object]] = []
    for server in node.servers:
        steps += [server.kill, server.wait]
        if server.stdout is not None:
            steps.append(server.stdout.close)
    netns_dir = node.net.config.netns_dir
    for uid in sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else []:
        steps.append(partial(node.net.teardown, uid))
    steps.append(node.net.teardown_node)
    steps += [partial(remove_netns, path) for path in [*node.extra_netns, node.netns]]
    errors = []
    for step in steps:
        try:
            step()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


# --- sandboxes ----------------------------------------------------------------------


def test_sandbox_addresses_routes_and_files(node: Node) -> None:
    node.net.setup_node()
    node.net.setup_node()  # idempotent
    pod = node.net.setup("uid-a", "web-a")

    assert pod.address == IPv4Interface("10.88.7.2/24")
    assert pod.gateway == POD_CIDR.network_address + 1
    assert is_netns(pod.netns) and pod.netns == node.tmp / "netns" / "uid-a"
    assert node.net.lookup("uid-a") == pod

    bridge = ip_json(node.netns, "addr", "show", "ptbr0")[0]
    assert ("10.88.7.1", 24) in {(a["local"], a["prefixlen"]) for a in bridge["addr_info"]}
    assert "UP" in bridge["flags"]
    veth = ip_json(node.netns, "-d", "link", "show", pod.host_veth)[0]
    assert veth["master"] == "ptbr0" and "UP" in veth["flags"]
    assert veth["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert len(pod.host_veth) <= 15 and pod.host_veth == host_veth_name("pt", "uid-a")

    assert links(pod.netns) == {"lo", "eth0"}
    eth0 = ip_json(pod.netns, "addr", "show", "eth0")[0]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] \
        == [("10.88.7.2", 24)]
    assert "UP" in ip_json(pod.netns, "link", "show", "lo")[0]["flags"]
    routes = ip_json(pod.netns, "route", "show")
    assert {"dst": "default", "gateway": "10.88.7.1", "dev": "eth0",
            "protocol": "static"}.items() <= routes[0].items()

    assert (pod.files / "hostname").read_text() == "web-a\n"
    assert "10.88.7.2\tweb-a\n" in (pod.files / "hosts").read_text()
    assert (pod.files / "resolv.conf").read_text() == (
        "nameserver 192.0.2.53\nsearch example.test\n"
    )
    # The host's own network knows nothing of it.
    assert not {"ptbr0", pod.host_veth} & set(os.listdir("/sys/class/net"))


def test_pods_reach_the_gateway_and_each_other(node: Node) -> None:
    node.net.setup_node()
    a = node.net.setup("uid-a", "a")
    b = node.net.setup("uid-b", "b")
    assert a.ip != b.ip
    assert ping(a.netns, a.gateway)
    assert ping(a.netns, b.ip)
    assert ping(b.netns, a.ip)
    assert ping(node.netns, b.ip)  # the node reaches its pods


def test_teardown_leaves_nothing(node: Node) -> None:
    node.net.setup_node()
    pod = node.net.setup("uid-a", "a")
    node.net.publish(pod, 80, 8080)
    node.net.teardown("uid-a")

    assert not pod.netns.exists()
    assert pod.host_veth not in links(node.netns)
    assert not pod.files.exists() and not pod.files.parent.exists()
    assert node.net.ipam.lookup("uid-a") is None
    assert node.net.nat.published() == []
    assert node.net.lookup("uid-a") is None
    with open("/proc/self/mountinfo") as f:
        assert str(pod.netns) not in f.read()
    node.net.teardown("uid-a")  # idempotent

    node.net.teardown_node()
    assert "ptbr0" not in links(node.netns)
    assert not node.net.nat.exists()
    node.net.teardown_node()  # idempotent


def test_teardown_cleans_a_half_made_sandbox(node: Node) -> None:
    node.net.setup_node()
    uid = "uid-crashed"
    netns = node.net.netns_path(uid)
    veth = host_veth_name("pt", uid)
    # What a crash between the steps of setup leaves: an address, the namespace,
    # a veth whose peer never reached the pod, an empty bind-mount file of another.
    node.net.ipam.allocate(uid)
    create_netns(netns)
    run(node.netns, "ip", "link", "add", veth, "type", "veth", "peer", "name", "ptpeer0")
    node.net.netns_path("uid-empty").touch()

    node.net.teardown(uid)
    node.net.teardown("uid-empty")
    assert not netns.exists() and not node.net.netns_path("uid-empty").exists()
    assert not {veth, "ptpeer0"} & links(node.netns)
    assert node.net.ipam.allocations() == {}
    # And the pod can be set up afresh.
    assert node.net.setup(uid, "again").ip.packed


def test_failed_setup_undoes_itself(node: Node) -> None:
    # No setup_node: the bridge is missing, so plugging the veth fails.
    with pytest.raises(NetworkError, match="bridge ptbr0: missing"):
        node.net.setup("uid-a", "a")
    assert not node.net.netns_path("uid-a").exists()
    assert node.net.ipam.allocations() == {}
    assert links(node.netns) == {"lo"}


def test_rtnl_answers_with_the_kernels_errors(node: Node) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    def inside() -> None:
        with Rtnl() as rtnl:
            with pytest.raises(NetlinkError) as missing:
                rtnl.index("ptnothing0")
            assert missing.value.code == errno.ENODEV
            assert rtnl.delete_link("ptnothing0") is False
            lo = rtnl.index("lo")
            assert lo == socket.if_nametoindex("lo")
            rtnl.add_address(lo, IPv4Interface("10.250.9.1/24"))
            with pytest.raises(NetlinkError, match="File exists") as twice:
                rtnl.add_address(lo, IPv4Interface("10.250.9.1/24"))
            assert twice.value.code == errno.EEXIST

    run_in_netns(node.netns, inside)
    assert "10.250.9.1" in {a["local"] for a in ip_json(node.netns, "addr", "show", "lo")[0]
                            ["addr_info"]}


def test_setup_refuses_an_existing_sandbox(node: Node) -> None:
    node.net.setup_node()
    pod = node.net.setup("uid-a", "a")
    with pytest.raises(NetworkError, match="exists"):
        node.net.setup("uid-a", "a")
    assert node.net.lookup("uid-a") == pod and ping(pod.netns, pod.gateway)


def test_address_survives_an_agent_restart(node: Node) -> None:
    node.net.setup_node()
    pod = node.net.setup("uid-a", "a")
    again = PodNetwork(node.net.config)  # a new agent process reads the same state
    assert again.lookup("uid-a") == pod
    assert HostLocalIPAM(POD_CIDR, node.net.config.state_dir).allocate("uid-a") == pod.address
    assert again.setup("uid-b", "b").ip != pod.ip


# --- nftables -----------------------------------------------------------------------


def test_hostport_from_the_node_and_from_outside(node: Node) -> None:
    outside = node.outside()
    enable_ip_forwarding(node.netns)
    assert ip_forwarding(node.netns)
    node.net.setup_node()
    a = node.net.setup("uid-a", "a")
    b = node.net.setup("uid-b", "b")
    node.net.publish(a, 8000, 18080)
    node.net.publish(a, 8000, 18080)  # the same mapping again: a no-op
    with pytest.raises(PortConflictError, match="tcp/18080"):
        node.net.publish(b, 8000, 18080)
    node.net.publish(b, 8000, 18081)
    assert len(node.net.nat.published()) == 2

    node.serve(a.netns, 8000, "pod-a")
    # From the node itself, to its own address (the output chain).
    assert connect(node.netns, UPLINK_NODE.ip, 18080).startswith("pod-a ")
    node.serve(a.netns, 8000, "pod-a")
    # From beyond the node (prerouting), the client's address preserved.
    assert connect(outside, UPLINK_NODE.ip, 18080) == f"pod-a {UPLINK_OUTSIDE.ip}"

    assert node.net.nat.unpublish(a.ip, 8000, 18080)
    assert not node.net.nat.unpublish(a.ip, 8000, 18080)
    with pytest.raises(ConnectionRefusedError):  # the node's own port 18080: nobody there
        connect(outside, UPLINK_NODE.ip, 18080)


def test_outbound_traffic_is_masqueraded(node: Node) -> None:
    outside = node.outside()
    enable_ip_forwarding(node.netns)
    node.net.setup_node()
    pod = node.net.setup("uid-a", "a")
    # The outside has no route to the pod CIDR: only a masqueraded packet gets an answer.
    assert ping(pod.netns, UPLINK_OUTSIDE.ip)
    node.serve(outside, 9000, "outside")
    assert connect(pod.netns, UPLINK_OUTSIDE.ip, 9000) == f"outside {UPLINK_NODE.ip}"
    # Between pods of the node, addresses are kept.
    other = node.net.setup("uid-b", "b")
    node.serve(other.netns, 9001, "b")
    assert connect(pod.netns, other.ip, 9001) == f"b {pod.ip}"

    assert node.net.nat.delete()
    assert not ping(pod.netns, UPLINK_OUTSIDE.ip)


# --- a container in the sandbox -----------------------------------------------------


def test_a_container_joins_the_sandbox_by_path(
    node: Node, busybox_rootfs: Path, cgroup_parent: str
) -> None:
    from runtime.api import Runtime
    from runtime.spec import convert, default_config

    node.net.setup_node()
    pod = node.net.setup("uid-a", "a")
    data = default_config(["sh", "-c", "ip -4 addr show eth0; ip route; ping -c1 -W1 10.88.7.1"])
    data["root"] = {"path": str(busybox_rootfs), "readonly": True}
    data["linux"]["namespaces"] = [
        ns for ns in data["linux"]["namespaces"] if ns["type"] != "network"
    ] + [{"type": "network", "path": str(pod.netns)}]
    rt = Runtime(root=node.tmp / "runtime", cgroup_parent=cgroup_parent)
    r, w = os.pipe()
    try:
        rt.create("pt-net", convert(data, busybox_rootfs).config, stdio=(None, w, w))
    finally:
        os.close(w)
    try:
        state = rt.start("pt-net")
        with os.fdopen(r) as out:
            output = out.read()
        _, status = os.waitpid(state.pid, 0)
    finally:
        rt.delete("pt-net", force=True)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert "inet 10.88.7.2/24" in output
    assert "default via 10.88.7.1 dev eth0" in output


# --- the pod's IPC and UTS namespaces -------------------------------------------------


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return str(path) in f.read()


def test_ipc_and_uts_namespaces_are_held_with_the_hostname(node: Node) -> None:
    held = node.net.hold_namespaces("uid-a", "web-a")
    directory = node.net.namespaces_dir("uid-a")
    assert (held.ipc, held.uts) == (directory / "ipc", directory / "uts")
    assert is_netns(directory / "ipc") and is_netns(directory / "uts")
    joined = subprocess.run(
        ["nsenter", f"--uts={held.uts}", f"--ipc={held.ipc}", "sh", "-c",
         "hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts"],
        capture_output=True, text=True, check=True, timeout=20).stdout.split()
    assert joined == ["web-a", f"ipc:[{os.stat(directory / 'ipc').st_ino}]",
                      f"uts:[{os.stat(directory / 'uts').st_ino}]"]
    assert joined[1] != os.readlink("/proc/self/ns/ipc")
    assert os.uname().nodename != "web-a"  # the node's own hostname is untouched
    inodes = [os.stat(p).st_ino for p in (directory / "ipc", directory / "uts")]
    assert node.net.hold_namespaces("uid-a", "web-a") == held  # kept, not made again
    assert [os.stat(p).st_ino for p in (directory / "ipc", directory / "uts")] == inodes

    node.net.release_namespaces("uid-a")
    assert not directory.exists() and not _mounted(directory)


def test_a_hostnetwork_pod_holds_only_ipc(node: Node) -> None:
    hostname = os.uname().nodename
    held = node.net.hold_namespaces("uid-h", None)
    assert held.uts is None and held.ipc is not None and is_netns(held.ipc)
    assert not (node.net.namespaces_dir("uid-h") / "uts").exists()
    assert os.uname().nodename == hostname
    node.net.release_namespaces("uid-h")


def test_a_failed_hold_leaves_no_namespace(node: Node) -> None:
    directory = node.net.namespaces_dir("uid-f")
    # sethostname refuses more than 64 bytes: after the unshare, before any bind.
    with pytest.raises(NetworkError, match="uts namespace"):
        node.net.hold_namespaces("uid-f", "h" * 65)
    assert not (directory / "ipc").exists() and not (directory / "uts").exists()
    # The IPC file made, then the UTS one cannot be: the IPC one goes again.
    (directory / "uts").mkdir(parents=True)
    from agent.network.netns import create_namespaces

    with pytest.raises(NetworkError, match="uts namespace"):
        create_namespaces({"ipc": directory / "ipc", "uts": directory / "uts"}, "web-f")
    assert not (directory / "ipc").exists() and not _mounted(directory / "ipc")
    (directory / "uts").rmdir()
    held = node.net.hold_namespaces("uid-f", "web-f")  # and it can be held afresh
    assert held.ipc is not None and held.uts is not None
    node.net.release_namespaces("uid-f")


def test_a_thread_goes_back_to_its_namespaces(node: Node) -> None:
    """Making or entering namespaces is done by the calling thread, which then
    returns to the namespaces it was in: after a failure too, and from a nested call."""

    def where() -> tuple[int, ...]:
        return tuple(os.stat(f"/proc/thread-self/ns/{kind}").st_ino
                     for kind in ("net", "ipc", "uts"))

    home = where()
    inside = run_in_netns(node.netns, where)
    assert inside[0] == os.stat(node.netns).st_ino and inside[1:] == home[1:]
    assert where() == home
    made = node.net.namespaces_dir("uid-t") / "uts"
    try:
        made_inside = create_namespaces({"uts": made}, hostname="pt-back", inside=where)
        assert made_inside is not None
        assert made_inside[2] == os.stat(made).st_ino and made_inside[:2] == home[:2]
        assert where() == home and os.uname().nodename != "pt-back"

        def fails() -> None:
            raise OSError(errno.EPERM, "refused on purpose")

        with pytest.raises(OSError, match="refused on purpose"):
            run_in_netns(node.netns, fails)
        assert where() == home
        # Nested: the inner call returns to the outer one's namespace, not further.
        def nested() -> tuple[tuple[int, ...], tuple[int, ...]]:
            before = where()
            run_in_netns(node.netns, where)
            return before, where()

        before, after = run_in_netns(node.netns, nested)
        assert before == after and before[0] == os.stat(node.netns).st_ino
        assert where() == home
    finally:
        node.net.release_namespaces("uid-t")
