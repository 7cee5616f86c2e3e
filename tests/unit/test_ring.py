"""The ring of users with waiting runs, the queued-runs limit, and upgrading a database from before both."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from yolo_task_manager.devices import device_matches
from yolo_task_manager.errors import InvalidInput, LimitExceeded
from yolo_task_manager.registry import Registry
from yolo_task_manager.registry.schema import _config
from yolo_task_manager.scheduling.policy import jain_index, requests_served_by
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Run, RunSpec, RunStatus

S = RunStatus


def _spec(user_id: str, n: int) -> RunSpec:
    return RunSpec(user_id=user_id, run_name=f"r{n}", base_model="yolov8n.yaml", dataset_dir="/d", task="detect",
                   epochs=1, device="cpu")  # fmt: skip


def test_users_join_the_ring_in_arrival_order_and_go_to_the_back_when_served(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given alice, bob and carol queue runs in that order
    alices = [create_run(user_id="alice") for _ in range(2)]
    create_run(user_id="bob")
    create_run(user_id="carol")
    assert [u for u, _ in registry.waiting_users(10)] == ["alice", "bob", "carol"]

    # When alice's first run is dispatched, then bob's only run
    registry.mark_dispatched(alices[0].run_id, "cpu.n1")
    bobs = registry.list_runs("bob")[0]
    registry.mark_dispatched(bobs.run_id, "cpu.n2")

    # Then alice (one run left) goes behind carol, and bob leaves the ring
    assert [u for u, _ in registry.waiting_users(10)] == ["carol", "alice"]
    # And a page of the ring is a page
    assert [u for u, _ in registry.waiting_users(1, offset=1)] == ["alice"]


def test_a_run_back_in_the_queue_puts_its_user_back_at_their_old_turn(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given bob was served after alice, and both have left the ring
    a, b = create_run(user_id="alice"), create_run(user_id="bob")
    registry.mark_dispatched(a.run_id, "cpu.n1")
    registry.mark_dispatched(b.run_id, "cpu.n2")
    assert registry.waiting_users(10) == []

    # When bob's run goes back to the queue (its worker was gone), then alice's
    registry.record_transition(b.run_id, S.QUEUED, attempt=1)
    registry.record_transition(a.run_id, S.QUEUED, attempt=1)

    # Then alice, served longer ago, is first again
    assert [u for u, _ in registry.waiting_users(10)] == ["alice", "bob"]


def test_queued_runs_past_the_limit_are_refused_and_nothing_is_written(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given alice has two runs queued, the limit
    first = registry.create_run(_spec("alice", 1), max_waiting=2)
    registry.create_run(_spec("alice", 2), max_waiting=2)

    # When she queues a third
    with pytest.raises(LimitExceeded) as info:
        registry.create_run(_spec("alice", 3), max_waiting=2)

    # Then it is refused, saying what to do, and no trace of it is left
    assert "max_queued_per_user=2" in str(info.value) and "stop()" in str(info.value)
    assert [r.run_name for r in registry.list_runs("alice")] == ["r1", "r2"]
    assert [u for u, _ in registry.waiting_users(10)] == ["alice"]
    # And bob is not affected, and alice may queue again once one of hers has been dispatched
    registry.create_run(_spec("bob", 1), max_waiting=2)
    registry.mark_dispatched(first.run_id, "cpu.n1")
    assert registry.create_run(_spec("alice", 3), max_waiting=2).status is S.QUEUED


def test_a_database_at_the_previous_revision_gets_the_counters_the_dispatched_state_and_the_ring(
    tmp_path: Path,
) -> None:
    # Given a registry at revision 0001: alice has two runs waiting, bob one, and carol one sent to a queue but
    # not started (then: queued with a queue)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
        for n, (user, queue) in enumerate([("alice", None), ("alice", None), ("bob", None), ("carol", "cpu.n1")]):
            conn.execute(
                text(
                    "INSERT INTO ytm_runs (run_id, user_id, run_name, status, base_model, dataset_dir, task, epochs, "
                    "device, hyp, attempt, queue, created_at) VALUES (:id, :user, :name, 'queued', 'yolov8n.yaml', "
                    "'/d', 'detect', 1, 'cpu', '{}', :attempt, :queue, :at)"
                ),
                {"id": f"r{n}", "user": user, "name": f"old{n}", "attempt": 1 if queue else 0, "queue": queue,
                 "at": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=n)},
            )  # fmt: skip
    engine.dispose()

    # When this version opens it
    registry = Registry(url)

    # Then the runs read with zero counters, carol's is dispatched, the ring holds alice then bob with their
    # counts, and alice's oldest run is the one to dispatch
    assert [(r.failed_attempts, r.worker_losses) for r in registry.list_runs()] == [(0, 0)] * 4
    assert registry.get_run("r3").status is S.DISPATCHED
    assert [u for u, _ in registry.waiting_users(10)] == ["alice", "bob"]
    assert [r.run_id for r in registry.waiting_runs("alice", ["cpu"], 10)] == ["r0", "r1"]
    assert registry.mark_dispatched("r0", "cpu.n2") == 1
    assert [u for u, _ in registry.waiting_users(10)] == ["bob", "alice"]
    registry.close()


def test_waiting_runs_gives_a_user_s_oldest_runs_for_the_devices_asked_with_a_limit(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given alice's runs for cpu, cuda:1 and auto, and bob's
    ids = [create_run(user_id="alice", device=d).run_id for d in ("cpu", "cuda:1", "auto", "cpu")]
    create_run(user_id="bob", device="cpu")

    # When her runs a CPU queue may take are read, two at most
    got = registry.waiting_runs("alice", sorted(requests_served_by("cpu.n1")), 2)

    # Then they are her two oldest CPU-or-auto runs
    assert [r.run_id for r in got] == [ids[0], ids[2]]


QUEUES = ["cpu.n1", "gpu.n1.0", "gpu.n2.1", "gpu.n1.10"]
REQUESTS = ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:10", *QUEUES, "gpu.n9.0"]


@pytest.mark.parametrize(("request_", "queue"), list(itertools.product(REQUESTS, QUEUES)))
def test_the_requests_a_queue_serves_are_exactly_those_device_matches_allows(request_: str, queue: str) -> None:
    # Given a device request and a queue
    # When the dispatcher asks which requests the queue serves
    # Then it agrees with device_matches, which the policy uses
    assert (request_ in requests_served_by(queue)) is device_matches(request_, queue)


def test_jain_index_is_one_for_equal_shares_and_one_over_n_for_one_user() -> None:
    # Given equal shares, one user with everything, and something between
    # When Jain's index is computed
    # Then it is 1, 1/n, and in between
    assert jain_index([3, 3, 3, 3]) == pytest.approx(1.0)
    assert jain_index([10, 0, 0, 0, 0]) == pytest.approx(0.2)
    assert 0.2 < jain_index([5, 1, 1, 1, 1]) < 1.0


def test_the_limits_on_attempts_losses_and_queued_runs_are_read_from_the_environment() -> None:
    # Given the three variables set
    env = {"YTM_MAX_ATTEMPTS": "5", "YTM_MAX_WORKER_LOSSES": "80", "YTM_MAX_QUEUED_PER_USER": "100"}

    # When settings are read
    settings = Settings.from_env(env)

    # Then they hold, and the defaults retry three failures and fifty lost workers with no queue limit
    assert (settings.max_attempts, settings.max_worker_losses, settings.max_queued_per_user) == (5, 80, 100)
    default = Settings.from_env({})
    assert (default.max_attempts, default.max_worker_losses, default.max_queued_per_user) == (3, 50, None)


@pytest.mark.parametrize("field", ["max_attempts", "max_worker_losses", "max_queued_per_user"])
def test_a_limit_below_one_is_refused(field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        Settings(**{field: 0})


def test_waiting_devices_lists_each_device_request_of_queued_runs_once(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given queued runs for cpu (three), cuda:1 and auto, and a dispatched one for cuda:7
    for device in ("cpu", "cuda:1", "cpu", "auto", "cpu"):
        create_run(device=device)
    registry.mark_dispatched(create_run(device="cuda:7").run_id, "gpu.n1.7")

    # When the waiting devices are read
    # Then each queued request appears once, sorted
    assert registry.waiting_devices() == ["auto", "cpu", "cuda:1"]
