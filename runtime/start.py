"""``start``: release a created container's init, which then execs the user's program.

The init is blocked opening ``exec.fifo`` for writing; opening the read end lets it
through, and the byte it writes says it is about to exec (``0``), or that a
startContainer hook failed (``1`` and the message). The fifo is removed, so its
absence is what marks the container as started; the poststart hooks run last.
"""

from __future__ import annotations

import os
import select
import signal

from runtime import hooks
from runtime.errors import SetupError
from runtime.processes import signal_pid, wait_gone
from runtime.state import State, StateStore, Status, check_transition, pid_start_time


def start(store: StateStore, container_id: str, warn: hooks.Warn = hooks.warn_stderr) -> State:
    state = store.load(container_id)
    check_transition(container_id, state.status, Status.RUNNING, "start")
    fifo = store.fifo(container_id)
    # Non-blocking: if the init died, a blocking open would wait forever.
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                word = os.read(fd, 4096)
                if word[:1] == b"0":
                    break
                if word[:1] == b"1":
                    # A startContainer hook failed and the init is exiting: the spec
                    # wants the container stopped, so make sure of it.
                    signal_pid(state.pid, signal.SIGKILL)
                    wait_gone(state.pid, state.pid_start, timeout=10.0)
                    raise SetupError(word[1:].decode(errors="replace"))
            if pid_start_time(state.pid) != state.pid_start:
                raise SetupError(f"container {container_id}: init exited before it could start")
    finally:
        os.close(fd)
    # The fifo's absence is the record that the container started (see runtime.state):
    # no state file to rewrite on this path.
    fifo.unlink()
    running = state._replace(status=Status.RUNNING)
    hooks.run_hooks_warning("poststart", hooks.load(store.dir(container_id)).poststart,
                            running.oci(), warn)
    return running

