"""The state machine and the state store, without root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.errors import (
    ContainerExistsError,
    ContainerNotFound,
    IllegalTransition,
    InvalidIDError,
    SignalError,
)
from runtime.signals import parse_signal
from runtime.state import State, StateStore, Status, check_id, check_transition, pid_start_time


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", "-x", "x" * 1025, "a b", "../x"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIDError):
        check_id(bad)


def test_good_ids() -> None:
    for good in ("a", "web-1", "x.y_z+1", "A" * 1024):
        check_id(good)


@pytest.mark.parametrize("current, target, ok", [
    (Status.CREATING, Status.CREATED, True),
    (Status.CREATED, Status.RUNNING, True),
    (Status.RUNNING, Status.PAUSED, True),
    (Status.PAUSED, Status.RUNNING, True),
    (Status.RUNNING, Status.STOPPED, True),
    (Status.RUNNING, Status.RUNNING, False),
    (Status.STOPPED, Status.RUNNING, False),
    (Status.CREATED, Status.PAUSED, False),
    (Status.STOPPED, Status.STOPPED, False),
])
def test_transitions(current: Status, target: Status, ok: bool) -> None:
    if ok:
        check_transition("c", current, target, "go")
    else:
        with pytest.raises(IllegalTransition, match=f"c is {current.value}: cannot go it"):
            check_transition("c", current, target, "go")


def test_store_round_trip_and_refinement(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.reserve("c1")
    with pytest.raises(ContainerExistsError):
        store.reserve("c1")
    me = os.getpid()
    state = State(id="c1", status=Status.CREATED, bundle="/b", oci_version="1.2.0", pid=me,
                  pid_start=pid_start_time(me) or 0)
    store.save(state)
    assert not list(tmp_path.glob("c1/.*tmp"))  # written via rename
    os.mkfifo(store.fifo("c1"))
    assert store.load("c1").status is Status.CREATED
    store.fifo("c1").unlink()
    assert store.load("c1").status is Status.RUNNING
    assert store.load("c1", frozen=True).status is Status.PAUSED
    # A reused PID with another start time is not our container.
    store.save(State(id="c1", status=Status.RUNNING, bundle="/b", oci_version="1.2.0", pid=me,
                     pid_start=1))
    assert store.load("c1").status is Status.STOPPED
    assert store.ids() == ["c1"]
    oci = store.load("c1").oci()
    assert oci["status"] == "stopped" and oci["pid"] == 0 and oci["id"] == "c1"
    store.remove("c1")
    with pytest.raises(ContainerNotFound, match="c1 does not exist"):
        store.load("c1")


@pytest.mark.parametrize("text, number", [("TERM", 15), ("SIGTERM", 15), ("15", 15),
                                          ("kill", 9), ("SIGUSR1", 10), ("sigrtmin", 34)])
def test_signal_names(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("bad", ["NOPE", "0", "999", "", "SIG"])
def test_unknown_signals(bad: str) -> None:
    with pytest.raises(SignalError, match="unknown signal"):
        parse_signal(bad)
