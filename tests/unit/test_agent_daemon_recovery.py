"""Recovery after an agent restart: the plan from a relist, a worker adopting what an
earlier agent left, and a leftover pod removed without a worker."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

from agent.pods.worker import PodWorker
from agent.recovery import plan_recovery, pod_uid_of, pod_uids_on_disk, remove_leftover
from tests.unit.test_agent_pods_worker import Info, World, make_pod, state, world

__all__ = ["world"]  # the fixture, used by name below


def test_pod_uid_of_reads_only_worker_made_ids() -> None:
    assert pod_uid_of("u1.app.3") == "u1"
    assert pod_uid_of("someone-elses") is None
    assert pod_uid_of("u1.app.x") is None
    assert pod_uid_of("a.b.c.1") is None


def test_plan_adopts_wanted_pods_and_removes_the_rest() -> None:
    plan = plan_recovery(wanted={"u1", "u2"},
                         container_ids=["u1.app.2", "u1.app.1", "u3.db.1", "manual"],
                         pod_uids_on_disk=["u1", "u3", "u4"])
    assert plan.adopt == {"u1": ["u1.app.1", "u1.app.2"], "u2": []}
    assert plan.leftovers == {"u3": ["u3.db.1"], "u4": []}


def test_pod_uids_on_disk_skips_hidden_and_missing(tmp_path: Path) -> None:
    (tmp_path / "pods" / "u1").mkdir(parents=True)
    (tmp_path / "pods" / ".lock").touch()
    assert pod_uids_on_disk(tmp_path / "pods", tmp_path / "absent") == {"u1"}


def test_adopt_takes_the_newest_run_and_keeps_it_running(world: World) -> None:
    logs = world.deps.pods_dir / "u1" / "logs" / "app"
    logs.mkdir(parents=True)
    for n in (1, 2, 3):
        (logs / f"{n}.log").touch()
    world.containers.running["u1.app.3"] = None  # type: ignore[assignment]
    worker = PodWorker(make_pod(), world.deps)
    sandbox = Info(Path("/netns/u1"), Path("/pods/u1/network"), IPv4Address("10.88.0.9"))
    when = datetime(2024, 4, 1, tzinfo=UTC)
    worker.adopt(sandbox, ["u1.app.2", "u1.app.3", "u1.gone.1"], {"u1.app.3": when})
    assert sorted(world.containers.removed) == ["u1.app.2", "u1.gone.1"]
    status = worker.sync()
    assert world.sandbox.made == []  # the sandbox is not made again
    assert world.containers.started == []  # nor the container
    assert status.phase == "Running" and status.pod_ip == "10.88.0.9"
    cs = status.container_statuses[0]
    assert state(status) == "running" and cs.container_id == "podium://u1.app.3"
    assert cs.restart_count == 2
    assert cs.state.running.started_at.ToDatetime(UTC) == when
    assert world.images.held == {"u1.app.3": "busybox"}


def test_an_exit_while_the_agent_was_down_is_picked_up(world: World) -> None:
    worker = PodWorker(make_pod(restartPolicy="Always"), world.deps)
    worker.adopt(Info(Path("/n"), Path("/f"), IPv4Address("10.88.0.9")),
                 ["u1.app.1"])
    world.containers.exit("u1.app.1", 3)
    status = worker.sync()
    # Restarted at once (the first restart), with the next run number.
    assert world.containers.started == ["u1.app.2"]
    cs = status.container_statuses[0]
    assert cs.restart_count == 1 and cs.last_state.terminated.exit_code == 3


def test_adopt_with_no_containers_starts_after_the_kept_logs(world: World) -> None:
    logs = world.deps.pods_dir / "u1" / "logs" / "app"
    logs.mkdir(parents=True)
    (logs / "4.log").touch()
    worker = PodWorker(make_pod(), world.deps)
    worker.adopt(None, [])
    worker.sync()
    assert world.sandbox.made == ["u1"]
    assert world.containers.started == ["u1.app.5"]


def test_remove_leftover_removes_everything_even_when_a_step_fails(world: World) -> None:
    pod_dir = world.deps.pods_dir / "u9"
    (pod_dir / "logs").mkdir(parents=True)
    messages: list[str] = []

    def broken_release(holder: str) -> None:
        raise OSError("images: locked")

    world.images.release = broken_release  # type: ignore[method-assign]
    remove_leftover("u9", ["u9.app.1"], containers=world.containers, images=world.images,
                    sandbox=world.sandbox, pods_dir=world.deps.pods_dir,
                    cgroup_parent="podium", log=messages.append)
    assert world.containers.removed == ["u9.app.1"]
    assert world.containers.cgroups_removed == ["podium/podu9"]
    assert world.sandbox.torn == ["u9"]
    assert not pod_dir.exists()
    assert messages == ["pod u9: removing image hold of u9.app.1: images: locked"]
