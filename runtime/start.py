"""``start``: release a created container's init, which then execs the user's program.

The init is blocked opening ``exec.fifo`` for writing; opening the read end lets it
through, and the byte it writes says it is about to exec. The fifo is removed, so
its absence is what marks the container as started.
"""

from __future__ import annotations

import os
import select

from runtime.errors import SetupError
from runtime.state import State, StateStore, Status, check_transition, pid_start_time


def start(store: StateStore, container_id: str) -> State:
    state = store.load(container_id)
    check_transition(container_id, state.status, Status.RUNNING, "start")
    fifo = store.fifo(container_id)
    # Non-blocking: if the init died, a blocking open would wait forever.
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100) and os.read(fd, 1) == b"0":
                break
            if pid_start_time(state.pid) != state.pid_start:
                raise SetupError(f"container {container_id}: init exited before it could start")
    finally:
        os.close(fd)
    # The fifo's absence is the record that the container started (see runtime.state):
    # no state file to rewrite on this path.
    fifo.unlink()
    return state._replace(status=Status.RUNNING)

