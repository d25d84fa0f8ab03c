"""Keeps the kernel's cgroup migration lock in its fast state while a command starts.

Moving a process into a cgroup (writing ``cgroup.procs``) takes a system-wide
lock for writing. After about 20 ms without such a write the kernel lets that
lock go back to a mode that favours readers, and the next writer then waits out
an RCU grace period (7-11 ms measured here) before it may move anything. runc
and crun move the container's init a few milliseconds after they start; a
Python command starts later than that gap, so every ``podium-runtime run``
would pay the grace period once more.

So ``create``, ``run`` and ``exec`` start a ``CgroupWarmer`` first thing: a
thread that moves this process into the cgroup it is already in (a move that
changes nothing), once at once, so the grace period passes while the command
imports its modules, then every ``PERIOD`` so it does not come back, until
the container's process has joined its cgroup. If no cgroup file can be
written (no privilege, an unusual mount), nothing is warmed and nothing fails.
"""

from __future__ import annotations

import _thread
import os

PERIOD = 0.01  # seconds between moves: well inside the ~20 ms the fast state lasts
CGROUP_ROOT = "/sys/fs/cgroup"


def own_cgroup_procs(proc_cgroup: str, root: str = CGROUP_ROOT) -> list[str]:
    """The ``cgroup.procs`` files of this process's own cgroups, from the text of
    /proc/self/cgroup: each v1 hierarchy's (``<root>/<controllers>/<path>``), then
    the unified one's (``<root>/unified/<path>`` on a hybrid host, ``<root>/<path>``)."""
    v1: list[str] = []
    v2: list[str] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers:
            v1.append(f"{root}/{controllers.removeprefix('name=')}{path}")
        else:
            v2 += [f"{root}/unified{path}", f"{root}{path}"]
    return [f"{d.rstrip('/')}/cgroup.procs" for d in v1 + v2]


class CgroupWarmer:
    # Built on _thread, not threading: importing threading would cost the command
    # ~1 ms of the very start-up this class exists to shorten.
    def __init__(self, procs_fd: int) -> None:
        self._fd = procs_fd
        self.moves = 0  # writes the kernel took
        self._stopping = _thread.allocate_lock()  # held until stop() releases it
        self._stopping.acquire()
        self._done = _thread.allocate_lock()  # held until the thread ends
        self._done.acquire()
        self._stopped = False

    @classmethod
    def start(cls, root: str = CGROUP_ROOT) -> CgroupWarmer | None:
        """A running warmer, or None where no ``cgroup.procs`` of ours can be written."""
        try:
            with open("/proc/self/cgroup") as f:
                candidates = own_cgroup_procs(f.read(), root)
        except OSError:
            return None
        for path in candidates:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            warmer = cls(fd)
            _thread.start_new_thread(warmer._run, ())
            return warmer
        return None

    def stop(self) -> None:
        """Ends the thread and waits for it (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.release()
        self._done.acquire()
        os.close(self._fd)

    def _run(self) -> None:
        try:
            while True:
                try:
                    os.write(self._fd, b"0")  # "0": the writer's own process
                except OSError:
                    return  # refused (e.g. a cgroup v2 domain rule): nothing to warm
                self.moves += 1
                if self._stopping.acquire(timeout=PERIOD):
                    return
        finally:
            self._done.release()
