"""Probes within a pod worker's step: run the due ones, stop a run that fails them.

Each container run has a fresh ``ProbeSet`` (``agent.pods.probes``). ``probe_step``
runs the probes that are due, there and then, each bounded by its own
``timeoutSeconds`` (so one step takes at most the sum of the due probes' timeouts,
usually one second each; probes are rare next to the loop's period). A failed
liveness or startup probe sends SIGTERM and, one grace period later (the probe's,
else the pod's), SIGKILL — without waiting in the step — and the restart policy and
back-off take it from there; the run's last state says ``Error`` with the probe's
message.

Exec probes run as the run's process (user, env, cwd) with the probe's command:
``exec_for`` builds that function, the worker rebuilding the process from the spec for
a run it adopted after an agent restart.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from agent.pods.probe_runners import ProbeRunner
from agent.pods.probes import ProbeChanges
from agent.pods.runs import ContainerRun
from runtime.spec.model import Process

# (container id, process, timeout) → exit code; TimeoutError once it had to be killed.
ContainerExec = Callable[[str, Process, float], int]
ExecIn = Callable[[tuple[str, ...], float], int]  # (args, timeout) → exit code
Signal = Callable[[ContainerRun, int, bool], None]  # (run, signal, all processes)


def probe_step(run: ContainerRun, *, clock: Callable[[], float], pod_ip: str,
               exec_for: Callable[[], ExecIn | None], send: Signal,
               default_grace: float) -> ProbeChanges | None:
    """Run ``run``'s due probes; on a liveness/startup failure, stop the run. What the
    probes that ran said (for events), or None when none ran."""
    now = clock()
    if run.kill_at is not None:
        if now >= run.kill_at:
            run.kill_at = None  # one SIGKILL; the next steps wait for its exit
            send(run, signal.SIGKILL, True)
        return None
    probes = run.probes
    if probes is None or run.probe_failure or not probes.due(now):
        return None
    changes = probes.tick(now, ProbeRunner(pod_ip, exec_for()), clock)
    if not changes.restart:
        return changes
    run.probe_failure = changes.restart_message
    grace = changes.grace_period
    if grace is None:
        grace = default_grace
    send(run, signal.SIGTERM, False)
    run.kill_at = clock() + grace
    return changes


def exec_as(run_exec: ContainerExec, container_id: str, template: Process) -> ExecIn:
    """Exec a probe's command in the container as ``template`` (without a terminal)."""

    def exec_in(args: tuple[str, ...], timeout: float) -> int:
        return run_exec(container_id, template._replace(args=args, terminal=False), timeout)

    return exec_in
