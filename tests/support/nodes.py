"""Several podium nodes on one machine: a scheduler process and agents, each agent
in a network namespace of its own with its own state root, bridge and cgroup parent.

Everything listens on unix sockets under the test's directory, which every
network namespace reaches. Processes are ended by PID; containers, network
namespaces and cgroups the agents leave are removed by `close()`.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from agent.network import create_netns, remove_netns
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc
from runtime.api import Runtime
from runtime.images import ImageStore, import_rootfs
from tests.support.wire import Wire

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
C = TypeVar("C", bound="LocalCluster")


def import_busybox(store_dir: Path, rootfs: Path, reference: str) -> None:
    store = ImageStore(store_dir)
    tarball = store_dir.parent / "busybox-image.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    import_rootfs(store, tarball, reference)
    tarball.unlink()


class Process:
    """A podium daemon started by the test, logging to a file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=out)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class SchedulerProcess(Process):
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.sock = tmp / "scheduler.sock"
        self.address = f"unix:{self.sock}"
        super().__init__([sys.executable, "-m", "scheduler.cli", "--listen", self.address,
                          "--data", str(tmp / "scheduler"), *extra], tmp / "scheduler.log")


def mount_state_tmpfs(path: Path) -> None:
    """Makes `path` a tmpfs, as /run is on a systemd node, for an agent's --root
    (whose default is /run/podium). On an ext4 without a journal, as a VM's disk
    may be, every new inode would otherwise be searched for past the inodes
    deleted in the last minutes, and a pod start makes and removes dozens."""
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "podium-state", str(path)],
                   check=True, capture_output=True)


def unmount_state_tmpfs(path: Path) -> None:
    """Undoes `mount_state_tmpfs`, once the agent and its containers are gone."""
    _unmount_quietly(path)


class AgentNode(Process):
    def __init__(self, tmp: Path, name: str, scheduler: str, images: Path,
                 cgroup_parent: str, bridge: str, wire: Wire | None = None,
                 state_on_tmpfs: bool = False) -> None:
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir()
        self.netns = self.dir / "netns"
        self.root = self.dir / "root"
        if state_on_tmpfs:
            mount_state_tmpfs(self.root)
        self.sock = self.dir / "agent.sock"
        self.cgroup_parent = cgroup_parent
        create_netns(self.netns)
        # On a wire the node has an address the others reach; else only loopback.
        self.ip = str(wire.plug(self.netns).ip) if wire is not None else "127.0.0.1"
        (self.dir / "manifests").mkdir()
        super().__init__(
            ["nsenter", f"--net={self.netns}", sys.executable, "-m", "agent.cli",
             "--scheduler", scheduler, "--node-name", name, "--node-ip", self.ip,
             "--manifests", str(self.dir / "manifests"), "--listen", f"unix:{self.sock}",
             "--root", str(self.root), "--bridge", bridge, "--cgroup-parent", cgroup_parent,
             "--image-store", str(images)], self.dir / "agent.log")

    def runtime(self) -> Runtime:
        return Runtime(root=self.root / "runtime", cgroup_parent=self.cgroup_parent)

    def close(self) -> None:
        """Kills the agent and removes what it left: containers, pod namespaces,
        the node's namespace."""
        self.kill()
        rt = self.runtime()
        for state in rt.containers():
            rt.delete(state.id, force=True)
        # A start the agent asked for just before it died goes on in its shim and
        # may end after the loop above looked: end whatever still runs in the
        # node's cgroups (started for this node, so ours), by PID.
        kill_cgroup_processes(self.cgroup_parent)
        for sub in ("netns", "agent/pods"):
            base = self.root / sub
            for entry in sorted(base.rglob("*"), reverse=True) if base.is_dir() else []:
                if entry.name in ("ipc", "uts", "net") or entry.parent.name == "netns":
                    _unmount_quietly(entry)
        netns_dir = self.root / "netns"
        for name in os.listdir(netns_dir) if netns_dir.is_dir() else []:
            remove_netns(netns_dir / name)
        remove_netns(self.netns)
        remove_cgroup_dirs(self.cgroup_parent)
        unmount_state_tmpfs(self.root)


def cgroup_trees(path: str) -> list[Path]:
    """``path`` in every cgroup hierarchy that has it."""
    root = Path("/sys/fs/cgroup")
    return [top for top in ([root / path, *(h / path for h in root.iterdir())]
                            if root.is_dir() else []) if top.is_dir()]


def kill_cgroup_processes(path: str, timeout: float = 5.0) -> list[int]:
    """SIGKILLs every process in the cgroup tree ``path`` and waits until none is
    left; returns the PIDs it found there first."""
    deadline = time.monotonic() + timeout
    found: list[int] = []
    while True:
        pids = {int(line) for top in cgroup_trees(path)
                for procs in top.rglob("cgroup.procs") for line in procs.read_text().split()}
        found = found or sorted(pids)
        if not pids:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"cgroup {path}: processes {sorted(pids)} outlived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def remove_cgroup_dirs(path: str, timeout: float = 5.0) -> None:
    """Removes an (empty) cgroup path from every hierarchy, deepest first; a cgroup
    whose last process was just killed is busy for a moment, so EBUSY is retried."""
    for top in cgroup_trees(path):
        for directory in [*sorted((d for d in top.rglob("*") if d.is_dir()), reverse=True),
                          top]:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    directory.rmdir()
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def _unmount_quietly(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0,
             logs: Callable[[], str] = lambda: "") -> T:
    """Polls `probe` until it returns something true; UNAVAILABLE counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            found = None
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                 f"{logs()[-6000:]}")
        time.sleep(0.1)


class LocalCluster:
    """A scheduler and agents on this machine, named ``nodes``, each agent in its own
    network namespace and on its own bridge (``<bridge_prefix><index>``), all running
    the busybox image ``image``; on ``wire`` the nodes reach each other by address.
    ``api`` is a ClusterService stub; ``close()`` ends and removes everything."""

    def __init__(self, tmp: Path, busybox_rootfs: Path, cgroup_parent: str, image: str,
                 nodes: Sequence[str], bridge_prefix: str, scheduler_args: Sequence[str] = (),
                 wire: Wire | None = None) -> None:
        images = tmp / "images"
        images.mkdir()
        import_busybox(images, busybox_rootfs, image)
        self.scheduler = SchedulerProcess(tmp, *scheduler_args)
        self.agents: dict[str, AgentNode] = {}
        self.wire = wire
        try:
            for i, name in enumerate(nodes):
                self.agents[name] = AgentNode(tmp, name, self.scheduler.address, images,
                                              f"{cgroup_parent}/{name}", f"{bridge_prefix}{i}",
                                              wire)
        except BaseException:
            self.close()
            raise
        self.channel = grpc.insecure_channel(self.scheduler.address)
        self.api = cluster_pb2_grpc.ClusterServiceStub(self.channel)

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for agent in self.agents.values():
            agent.start()
        self.scheduler.start()

    def ready_nodes(self) -> int:
        nodes = self.api.List(cluster_pb2.ListRequest(kind="Node"), timeout=5).items
        return sum(any(c.type == "Ready" and c.status == "True" for c in n.node.status.conditions)
                   for n in nodes)

    def logs(self) -> str:
        parts = [f"--- scheduler\n{self.scheduler.output()[-3000:]}"]
        parts += [f"--- {n}\n{a.output()[-3000:]}" for n, a in self.agents.items()]
        return "\n".join(parts)

    def close(self) -> None:
        if hasattr(self, "channel"):
            self.channel.close()
        for agent in self.agents.values():
            agent.close()
        self.scheduler.kill()
        if self.wire is not None:
            self.wire.close()


def need_cluster_tools() -> None:
    """Root, nft and nsenter, or a skip (a failure under PODIUM_REQUIRE_ALL)."""
    import shutil

    from tests.conftest import need, need_root

    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    need(shutil.which("nsenter") is not None, "needs nsenter (util-linux)")
