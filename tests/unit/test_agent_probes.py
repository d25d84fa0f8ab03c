"""Probes as data and as a state machine: defaults, validation, named ports, Prober, ProbeSet."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from agent.pods.errors import PodSpecError
from agent.pods.probe_runners import (
    Check,
    ExecCheck,
    HTTPGetCheck,
    ProbeResult,
    Result,
    TCPSocketCheck,
)
from agent.pods.probes import (
    LIVENESS,
    READINESS,
    STARTUP,
    Prober,
    ProbeSet,
    ProbeSpec,
    container_probes,
)
from proto.podium.v1 import pod_pb2

OK = ProbeResult(Result.SUCCESS)
BAD = ProbeResult(Result.FAILURE, "HTTP probe failed with statuscode: 500")
UNKNOWN = ProbeResult(Result.UNKNOWN)


def container(**fields: Any) -> pod_pb2.Container:
    data = {"name": "app", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 8080},
                      {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}
    data.update(fields)
    return json_format.ParseDict(data, pod_pb2.Container())


def probes_of(**fields: Any) -> dict[str, ProbeSpec]:
    return container_probes(container(**fields), "spec.containers[0]")


def spec_error(**fields: Any) -> PodSpecError:
    with pytest.raises(PodSpecError) as info:
        probes_of(**fields)
    return info.value


# --- conversion and validation --------------------------------------------------------


def test_defaults_are_kubernetes() -> None:
    probes = probes_of(livenessProbe={"exec": {"command": ["true"]}})
    assert probes == {LIVENESS: ProbeSpec(LIVENESS, ExecCheck(("true",)), initial_delay=0.0,
                                          period=10.0, timeout=1.0, success_threshold=1,
                                          failure_threshold=3, grace_period=None)}


def test_all_three_kinds_and_their_settings() -> None:
    probes = probes_of(
        startupProbe={"tcpSocket": {"port": {"intValue": 9000}}, "failureThreshold": 30,
                      "periodSeconds": 1},
        livenessProbe={"httpGet": {"path": "/healthz", "port": {"strValue": "http"},
                                   "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                       "initialDelaySeconds": 5, "timeoutSeconds": 2,
                       "terminationGracePeriodSeconds": 7},
        readinessProbe={"httpGet": {"port": {"intValue": 81}, "host": "10.0.0.9",
                                    "scheme": "HTTPS"},
                        "successThreshold": 2},
    )
    assert probes[STARTUP].check == TCPSocketCheck(9000)
    assert (probes[STARTUP].failure_threshold, probes[STARTUP].period) == (30, 1.0)
    assert probes[LIVENESS].check == HTTPGetCheck(8080, "/healthz", "", "HTTP",
                                                  (("X-Probe", "1"),))
    assert (probes[LIVENESS].initial_delay, probes[LIVENESS].timeout) == (5.0, 2.0)
    assert probes[LIVENESS].grace_period == 7.0
    assert probes[READINESS].check == HTTPGetCheck(81, "/", "10.0.0.9", "HTTPS")
    assert probes[READINESS].success_threshold == 2


def test_no_probes() -> None:
    assert probes_of() == {}


@pytest.mark.parametrize("kind", ["livenessProbe", "startupProbe"])
def test_liveness_and_startup_need_success_threshold_one(kind: str) -> None:
    error = spec_error(**{kind: {"exec": {"command": ["true"]}, "successThreshold": 2}})
    assert error.field == f"spec.containers[0].{kind}.successThreshold"
    assert "must be 1" in str(error)


@pytest.mark.parametrize(("probe", "field", "words"), [
    ({}, "readinessProbe", "needs one of exec, httpGet or tcpSocket"),
    ({"exec": {}}, "readinessProbe.exec.command", "at least one word"),
    ({"exec": {"command": ["x"]}, "periodSeconds": -1}, "readinessProbe.periodSeconds",
     "negative"),
    ({"exec": {"command": ["x"]}, "failureThreshold": -2}, "readinessProbe.failureThreshold",
     "negative"),
    ({"tcpSocket": {"port": {"strValue": "nope"}}}, "readinessProbe.tcpSocket.port",
     'no TCP port named "nope"'),
    ({"tcpSocket": {"port": {"strValue": "dns"}}}, "readinessProbe.tcpSocket.port",
     'no TCP port named "dns"'),  # a UDP port cannot be probed
    ({"tcpSocket": {"port": {"strValue": "Bad_Name"}}}, "readinessProbe.tcpSocket.port",
     "not a port name"),
    ({"tcpSocket": {}}, "readinessProbe.tcpSocket.port", "is required"),
    ({"httpGet": {"port": {"intValue": 70000}}}, "readinessProbe.httpGet.port",
     "not a port number"),
    ({"httpGet": {"port": {"intValue": 80}, "scheme": "FTP"}}, "readinessProbe.httpGet.scheme",
     "not HTTP or HTTPS"),
    ({"httpGet": {"port": {"intValue": 80}, "httpHeaders": [{"name": "a b", "value": "1"}]}},
     "readinessProbe.httpGet.httpHeaders[0].name", "not an HTTP header name"),
    ({"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 5},
     "readinessProbe.terminationGracePeriodSeconds", "only liveness and startup"),
])
def test_bad_probes_name_the_field(probe: dict[str, Any], field: str, words: str) -> None:
    error = spec_error(readinessProbe=probe)
    assert error.field == f"spec.containers[0].{field}"
    assert words in str(error)
    assert "\n" not in str(error)


def test_grace_period_must_be_positive() -> None:
    error = spec_error(livenessProbe={"exec": {"command": ["x"]},
                                      "terminationGracePeriodSeconds": 0})
    assert error.field == "spec.containers[0].livenessProbe.terminationGracePeriodSeconds"


# --- Prober ---------------------------------------------------------------------------


def spec(kind: str = LIVENESS, **settings: Any) -> ProbeSpec:
    return ProbeSpec(kind, ExecCheck(("true",)), **settings)


def test_first_run_after_the_initial_delay_then_every_period() -> None:
    prober = Prober(spec(initial_delay=5.0, period=10.0), started_at=100.0)
    assert not prober.due(104.9)
    assert prober.due(105.0)
    prober.record(OK, 105.2)
    assert not prober.due(114.9)
    assert prober.due(115.0)  # the schedule's cadence, not the run's end + period
    prober.record(OK, 115.0)
    assert prober.due(125.0)


def test_a_late_caller_starts_the_schedule_afresh() -> None:
    prober = Prober(spec(period=10.0), started_at=0.0)
    prober.record(OK, 47.0)
    assert not prober.due(56.0)
    assert prober.due(57.0)


def test_initial_states() -> None:
    assert Prober(spec(LIVENESS), 0.0).healthy
    assert not Prober(spec(READINESS), 0.0).healthy
    assert not Prober(spec(STARTUP), 0.0).healthy


def test_liveness_gives_up_after_failure_threshold_and_holds() -> None:
    prober = Prober(spec(failure_threshold=3, period=1.0), 0.0)
    assert not prober.record(BAD, 0.0)
    assert not prober.record(BAD, 1.0)
    assert not prober.record(OK, 2.0)  # breaks the streak
    assert not prober.record(BAD, 3.0)
    assert not prober.record(BAD, 4.0)
    assert prober.record(BAD, 5.0)
    assert not prober.healthy and prober.failed
    assert not prober.due(100.0)  # until the container's next run


def test_unknown_results_change_nothing_but_the_schedule() -> None:
    prober = Prober(spec(failure_threshold=2, period=1.0), 0.0)
    prober.record(BAD, 0.0)
    prober.record(UNKNOWN, 1.0)
    assert prober.healthy and prober.next_at == 2.0
    prober.record(BAD, 2.0)  # still in a row: the unknown run did not count
    assert prober.failed


def test_readiness_comes_and_goes() -> None:
    prober = Prober(spec(READINESS, success_threshold=2, failure_threshold=2), 0.0)
    prober.record(OK, 0.0)
    assert not prober.healthy
    assert prober.record(OK, 10.0) and prober.healthy
    prober.record(BAD, 20.0)
    assert prober.healthy
    assert prober.record(BAD, 30.0) and not prober.healthy
    assert prober.due(40.0)  # readiness keeps probing
    prober.record(OK, 40.0)
    assert prober.record(OK, 50.0) and prober.healthy


def test_startup_succeeds_once_and_stops() -> None:
    prober = Prober(spec(STARTUP, failure_threshold=5), 0.0)
    prober.record(BAD, 0.0)
    assert prober.record(OK, 10.0) and prober.healthy
    assert not prober.due(1000.0) and not prober.failed


results = st.lists(st.sampled_from([OK, BAD, UNKNOWN]), max_size=40)


@given(results, st.integers(1, 5), st.integers(1, 5))
def test_never_ready_before_success_threshold_in_a_row(
        seq: list[ProbeResult], success: int, failure: int) -> None:
    prober = Prober(spec(READINESS, success_threshold=success, failure_threshold=failure), 0.0)
    known: list[Result] = []
    for i, result in enumerate(seq):
        prober.record(result, float(i))
        if result.result is not Result.UNKNOWN:
            known.append(result.result)
        if prober.healthy:
            # The last transition to ready had `success` successes in a row behind it.
            ever = any(known[j:j + success] == [Result.SUCCESS] * success
                       for j in range(len(known) - success + 1))
            assert ever
        if known[-success:] == [Result.SUCCESS] * success and len(known) >= success:
            assert prober.healthy
        if len(known) >= failure and known[-failure:] == [Result.FAILURE] * failure:
            assert not prober.healthy


@given(results, st.integers(1, 6))
def test_liveness_restarts_exactly_after_failure_threshold_in_a_row(
        seq: list[ProbeResult], failure: int) -> None:
    prober = Prober(spec(LIVENESS, failure_threshold=failure), 0.0)
    streak = 0
    for i, result in enumerate(seq):
        if not prober.due(float(10 * i)):
            assert prober.failed
            return
        prober.record(result, float(10 * i))
        if result.result is Result.FAILURE:
            streak += 1
        elif result.result is Result.SUCCESS:
            streak = 0
        assert prober.failed == (streak >= failure)


# --- ProbeSet -------------------------------------------------------------------------


class FakeRun:
    """The runner a ProbeSet calls: answers from a script per check, records calls."""

    def __init__(self, answers: dict[Check, ProbeResult]) -> None:
        self.answers = answers
        self.calls: list[tuple[Check, float]] = []

    def __call__(self, check: Check, timeout: float) -> ProbeResult:
        self.calls.append((check, timeout))
        return self.answers[check]


LIVE = ExecCheck(("live",))
READY = TCPSocketCheck(8080)
START = HTTPGetCheck(8080, "/started")


def full_set(started_at: float = 0.0) -> ProbeSet:
    return ProbeSet({
        STARTUP: ProbeSpec(STARTUP, START, period=1.0, failure_threshold=3),
        LIVENESS: ProbeSpec(LIVENESS, LIVE, period=5.0, timeout=2.0, grace_period=4.0),
        READINESS: ProbeSpec(READINESS, READY, period=5.0, failure_threshold=1),
    }, started_at)


def test_without_probes_a_container_is_started_live_and_ready() -> None:
    probes = ProbeSet({}, 0.0)
    assert probes.started and probes.live and probes.ready
    assert probes.next_due() is None
    assert probes.tick(10.0, FakeRun({})) == (False, "", None, False, True, False, ())


def test_startup_gates_liveness_and_readiness() -> None:
    probes = full_set()
    run = FakeRun({START: BAD, LIVE: OK, READY: OK})
    changes = probes.tick(0.0, run)
    assert [c for c, _ in run.calls] == [START]
    assert not changes.ready and not probes.started and not changes.restart
    assert changes.runs[0].describe() == ("Startup probe failed: "
                                          "HTTP probe failed with statuscode: 500")
    run.answers[START] = OK
    changes = probes.tick(1.0, run)
    # Started: the others were due long ago and run in the same tick.
    assert [c for c, _ in run.calls[1:]] == [START, LIVE, READY]
    assert changes.started_changed and changes.ready_changed and changes.ready
    assert (LIVE, 2.0) in run.calls  # the probe's own timeout
    run.calls.clear()
    probes.tick(100.0, run)
    assert START not in [c for c, _ in run.calls]  # never again


def test_startup_failure_asks_for_a_restart() -> None:
    probes = full_set()
    run = FakeRun({START: BAD, LIVE: OK, READY: OK})
    assert not probes.tick(0.0, run).restart
    assert not probes.tick(1.0, run).restart
    changes = probes.tick(2.0, run)
    assert changes.restart and changes.grace_period is None
    assert changes.restart_message.startswith("Startup probe failed 3 times in a row: HTTP")
    assert probes.restart_needed and not probes.ready
    assert not probes.tick(3.0, run).restart  # said once
    assert probes.due(100.0) == [] and probes.next_due() is None


def test_liveness_failure_restarts_with_its_grace_period() -> None:
    probes = ProbeSet({LIVENESS: ProbeSpec(LIVENESS, LIVE, period=5.0, grace_period=4.0)}, 0.0)
    run = FakeRun({LIVE: BAD})
    assert probes.next_due() == 0.0
    flags = [probes.tick(t, run).restart for t in (0.0, 5.0, 10.0)]
    assert flags == [False, False, True]
    changes_ready = probes.ready
    assert not changes_ready and probes.restart_needed
    assert len(run.calls) == 3


def test_readiness_toggles() -> None:
    probes = ProbeSet({READINESS: ProbeSpec(READINESS, READY, period=5.0,
                                            failure_threshold=1)}, 0.0)
    run = FakeRun({READY: OK})
    assert not probes.ready
    changes = probes.tick(0.0, run)
    assert changes.ready_changed and changes.ready
    assert probes.tick(1.0, run).runs == ()  # not due
    run.answers[READY] = BAD
    changes = probes.tick(5.0, run)
    assert changes.ready_changed and not changes.ready and not changes.restart
    assert probes.next_due() == 10.0


def test_tick_stamps_results_with_the_clock_when_given() -> None:
    probes = ProbeSet({READINESS: ProbeSpec(READINESS, READY, period=5.0)}, 0.0)
    probes.tick(0.0, FakeRun({READY: OK}), clock=lambda: 3.0)  # the probe took 3 s
    assert probes.next_due() == 5.0  # cadence kept from the scheduled time


def test_for_container_builds_from_the_spec() -> None:
    probes = ProbeSet.for_container(
        container(readinessProbe={"tcpSocket": {"port": {"strValue": "http"}}}),
        "spec.containers[0]", started_at=50.0)
    run = FakeRun({TCPSocketCheck(8080): OK})
    assert probes.tick(49.0, run).runs == ()
    assert probes.tick(50.0, run).ready
