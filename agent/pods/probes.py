"""Liveness, readiness and startup probes: when to run them and what their results mean.

Pure logic on a clock the caller passes in (``now``, monotonic seconds); running a
probe is ``agent.pods.probe_runners``' job.

    probe_spec, container_probes   a container's Probe messages → checked ``ProbeSpec``s
                                   (Kubernetes' defaults; errors name the field)
    Prober                         one probe of one container run: due(now),
                                   record(result, now), healthy
    ProbeSet                       a container run's probes together: the startup probe
                                   gates the others; tick(now, run) → ProbeChanges

Kubernetes' rules: the first run comes ``initialDelaySeconds`` after the container
started, then one every ``periodSeconds``. A result counts only in a run of equal
results: ``successThreshold`` successes in a row make the probe healthy,
``failureThreshold`` failures in a row unhealthy; an unknown result (the probe could
not be run) changes nothing. Liveness starts healthy, readiness and startup do not.
Until the startup probe has succeeded once, liveness and readiness do not run and
the container is not ready; once it has, it is never run again. A liveness or
startup probe that turns unhealthy asks for a restart and then holds still: the
caller makes a new ``ProbeSet`` for the container's next run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

from agent.pods.errors import PodSpecError
from agent.pods.probe_runners import (
    Check,
    ExecCheck,
    HTTPGetCheck,
    ProbeResult,
    Result,
    TCPSocketCheck,
)
from proto.podium.v1 import meta_pb2, pod_pb2

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
KINDS = (STARTUP, LIVENESS, READINESS)  # the order a tick runs them in
FIELDS = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}
TITLES = {LIVENESS: "Liveness", READINESS: "Readiness", STARTUP: "Startup"}

DEFAULT_TIMEOUT = 1
DEFAULT_PERIOD = 10
DEFAULT_SUCCESS = 1
DEFAULT_FAILURE = 3

_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token


class ProbeSpec(NamedTuple):
    """One probe, checked, with defaults filled in and named ports resolved."""

    kind: str  # LIVENESS, READINESS or STARTUP
    check: Check
    initial_delay: float = 0.0
    period: float = DEFAULT_PERIOD
    timeout: float = DEFAULT_TIMEOUT
    success_threshold: int = DEFAULT_SUCCESS
    failure_threshold: int = DEFAULT_FAILURE
    grace_period: float | None = None  # overrides the pod's when this probe kills


# --- convert and check ----------------------------------------------------------------


def container_probes(container: pod_pb2.Container, where: str) -> dict[str, ProbeSpec]:
    """The container's probes by kind; ``where`` is its field path
    (``spec.containers[0]``). Raises ``PodSpecError`` naming the bad field."""
    given = {
        STARTUP: container.startup_probe if container.HasField("startup_probe") else None,
        LIVENESS: container.liveness_probe if container.HasField("liveness_probe") else None,
        READINESS: container.readiness_probe if container.HasField("readiness_probe") else None,
    }
    return {kind: probe_spec(probe, kind, container, f"{where}.{FIELDS[kind]}")
            for kind, probe in given.items() if probe is not None}


def probe_spec(probe: pod_pb2.Probe, kind: str, container: pod_pb2.Container,
               where: str) -> ProbeSpec:
    """One Probe message → ``ProbeSpec``; ``where`` is the probe's field path."""
    for name in ("initial_delay_seconds", "timeout_seconds", "period_seconds",
                 "success_threshold", "failure_threshold"):
        if getattr(probe, name) < 0:
            raise PodSpecError(f"{where}.{_camel(name)}",
                               f"{getattr(probe, name)} must not be negative")
    success = probe.success_threshold or DEFAULT_SUCCESS
    if kind in (LIVENESS, STARTUP) and success != 1:
        raise PodSpecError(f"{where}.successThreshold",
                           f"must be 1 for a {kind} probe, not {success}")
    grace: float | None = None
    if probe.HasField("termination_grace_period_seconds"):
        if kind == READINESS:
            raise PodSpecError(f"{where}.terminationGracePeriodSeconds",
                               "only liveness and startup probes stop the container")
        if probe.termination_grace_period_seconds <= 0:
            raise PodSpecError(f"{where}.terminationGracePeriodSeconds",
                               f"{probe.termination_grace_period_seconds} must be positive")
        grace = float(probe.termination_grace_period_seconds)
    return ProbeSpec(
        kind=kind,
        check=_check(probe, container, where),
        initial_delay=float(probe.initial_delay_seconds),
        period=float(probe.period_seconds or DEFAULT_PERIOD),
        timeout=float(probe.timeout_seconds or DEFAULT_TIMEOUT),
        success_threshold=success,
        failure_threshold=probe.failure_threshold or DEFAULT_FAILURE,
        grace_period=grace,
    )


def _check(probe: pod_pb2.Probe, container: pod_pb2.Container, where: str) -> Check:
    action = probe.WhichOneof("action")
    if action == "exec":
        if not probe.exec.command:
            raise PodSpecError(f"{where}.exec.command", "needs at least one word")
        return ExecCheck(tuple(probe.exec.command))
    if action == "http_get":
        get = probe.http_get
        scheme = get.scheme or "HTTP"
        if scheme not in ("HTTP", "HTTPS"):
            raise PodSpecError(f"{where}.httpGet.scheme", f'"{get.scheme}" is not HTTP or HTTPS')
        headers = []
        for i, header in enumerate(get.http_headers):
            if not _HEADER_NAME.match(header.name):
                raise PodSpecError(f"{where}.httpGet.httpHeaders[{i}].name",
                                   f"{header.name!r} is not an HTTP header name")
            if "\r" in header.value or "\n" in header.value:
                raise PodSpecError(f"{where}.httpGet.httpHeaders[{i}].value",
                                   "must not hold a line break")
            headers.append((header.name, header.value))
        return HTTPGetCheck(
            port=resolve_port(get.port, container, f"{where}.httpGet.port"),
            path=get.path or "/",
            host=get.host,
            scheme=scheme,
            headers=tuple(headers),
        )
    if action == "tcp_socket":
        tcp = probe.tcp_socket
        return TCPSocketCheck(resolve_port(tcp.port, container, f"{where}.tcpSocket.port"),
                              tcp.host)
    raise PodSpecError(where, "needs one of exec, httpGet or tcpSocket")


def resolve_port(port: meta_pb2.IntOrString, container: pod_pb2.Container, field: str) -> int:
    """A probe's port: a number, or the name of one of the container's TCP ports."""
    kind = port.WhichOneof("value")
    if kind == "str_value":
        name = port.str_value
        if not _PORT_NAME.match(name) or len(name) > 15:
            raise PodSpecError(field, f'"{name}" is not a port name')
        for declared in container.ports:
            if declared.name == name and declared.protocol in ("", "TCP"):
                return _port_number(declared.container_port, field)
        raise PodSpecError(field, f'the container has no TCP port named "{name}"')
    if kind is None:
        raise PodSpecError(field, "is required")
    return _port_number(port.int_value, field)


def _port_number(number: int, field: str) -> int:
    if not 1 <= number <= 65535:
        raise PodSpecError(field, f"{number} is not a port number (1-65535)")
    return number


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


# --- the state machine ----------------------------------------------------------------


class Prober:
    """One probe of one container run, started at ``started_at`` on the caller's clock."""

    def __init__(self, spec: ProbeSpec, started_at: float) -> None:
        self.spec = spec
        self.next_at = started_at + spec.initial_delay
        self.healthy = spec.kind == LIVENESS
        self.last: ProbeResult | None = None  # the latest known result
        self.streak = 0  # how many results in a row equal to last
        self.held = False  # done (startup succeeded) or gave up (liveness/startup failed)

    def due(self, now: float) -> bool:
        return not self.held and now >= self.next_at

    def record(self, result: ProbeResult | Result, now: float) -> bool:
        """Count one run that ended at ``now``; returns whether ``healthy`` changed."""
        if isinstance(result, Result):
            result = ProbeResult(result)
        # Keep the cadence of the schedule; a caller that fell behind starts afresh.
        self.next_at += self.spec.period
        if self.next_at <= now:
            self.next_at = now + self.spec.period
        if result.result is Result.UNKNOWN:
            return False
        if self.last is not None and self.last.result is result.result:
            self.streak += 1
        else:
            self.streak = 1
        self.last = result
        was = self.healthy
        if result.result is Result.SUCCESS and self.streak >= self.spec.success_threshold:
            self.healthy = True
            if self.spec.kind == STARTUP:
                self.held = True
        elif result.result is Result.FAILURE and self.streak >= self.spec.failure_threshold:
            self.healthy = False
            if self.spec.kind in (LIVENESS, STARTUP):
                self.held = True
        return self.healthy != was

    @property
    def failed(self) -> bool:
        """A liveness or startup probe that gave up: the container must restart."""
        return self.held and not self.healthy


class ProbeRun(NamedTuple):
    """One probe that ran in a tick, and what it said."""

    kind: str
    result: ProbeResult

    def describe(self) -> str:
        """The event message, as the kubelet words it: ``Liveness probe failed: …``."""
        word = {Result.SUCCESS: "succeeded", Result.FAILURE: "failed",
                Result.UNKNOWN: "errored"}[self.result.result]
        text = f"{TITLES[self.kind]} probe {word}"
        return f"{text}: {self.result.message}" if self.result.message else text


class ProbeChanges(NamedTuple):
    """What a tick changed, for the worker to act on."""

    restart: bool = False  # newly: kill the container (restartPolicy decides what next)
    restart_message: str = ""  # "Liveness probe failed: …", for the event and status
    grace_period: float | None = None  # the failing probe's, if it set one
    ready_changed: bool = False
    ready: bool = False
    started_changed: bool = False
    runs: tuple[ProbeRun, ...] = ()  # every probe run this tick (failures → events)


ProbeCall = Callable[[Check, float], ProbeResult]  # (check, timeout) → result


class ProbeSet:
    """The probes of one container run. Make a new one each time the container starts."""

    def __init__(self, probes: Mapping[str, ProbeSpec], started_at: float) -> None:
        self.probers = {kind: Prober(probes[kind], started_at) for kind in KINDS
                        if kind in probes}

    @classmethod
    def for_container(cls, container: pod_pb2.Container, where: str,
                      started_at: float) -> ProbeSet:
        return cls(container_probes(container, where), started_at)

    @property
    def started(self) -> bool:
        startup = self.probers.get(STARTUP)
        return startup is None or startup.healthy

    @property
    def live(self) -> bool:
        return not any(p.failed for p in self.probers.values())

    @property
    def ready(self) -> bool:
        readiness = self.probers.get(READINESS)
        return self.live and self.started and (readiness is None or readiness.healthy)

    @property
    def restart_needed(self) -> bool:
        return not self.live

    def due(self, now: float) -> list[Prober]:
        """The probers to run now, startup first; the others wait for it."""
        if not self.live:
            return []
        return [p for p in self.probers.values()
                if p.due(now) and (p.spec.kind == STARTUP or self.started)]

    def next_due(self) -> float | None:
        """The earliest clock time a probe may be due (None: nothing left to run).
        A prober gated by the startup probe is counted too, so this never waits long."""
        if not self.live:
            return None
        times = [p.next_at for p in self.probers.values() if not p.held]
        return min(times) if times else None

    def tick(self, now: float, run: ProbeCall, clock: Callable[[], float] | None = None
             ) -> ProbeChanges:
        """Run every due probe through ``run`` and record its result. ``clock``, if
        given, stamps each result with the time it finished (probes take time)."""
        was_ready, was_started = self.ready, self.started
        runs: list[ProbeRun] = []
        restart_message = ""
        grace: float | None = None
        for kind in KINDS:
            prober = self.probers.get(kind)
            # Checked one by one: a startup success this tick lets the others run.
            if prober is None or prober not in self.due(now):
                continue
            result = run(prober.spec.check, prober.spec.timeout)
            prober.record(result, clock() if clock is not None else now)
            runs.append(ProbeRun(kind, result))
            if prober.failed:
                restart_message = (f"{TITLES[kind]} probe failed {prober.streak} times "
                                   f"in a row: {result.message}")
                grace = prober.spec.grace_period
                break
        ready = self.ready
        return ProbeChanges(
            restart=bool(restart_message),
            restart_message=restart_message,
            grace_period=grace,
            ready_changed=ready != was_ready,
            ready=ready,
            started_changed=self.started != was_started,
            runs=tuple(runs),
        )
