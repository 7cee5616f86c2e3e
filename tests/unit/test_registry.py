"""``Registry``: runs in SQLite, guarded transitions with a row each, dispatch claims and per-epoch metrics."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from yolo_task_manager.errors import AlreadyExists, InvalidInput, InvalidTransition, NotFound
from yolo_task_manager.registry import Registry
from yolo_task_manager.registry.registry import ALLOWED
from yolo_task_manager.values import Run, RunSpec, RunStatus

S = RunStatus

# A legal path from QUEUED to each state, so that any state can be the start of an edge.
PATH_TO: dict[RunStatus, list[RunStatus]] = {
    S.QUEUED: [],
    S.DISPATCHED: [S.DISPATCHED],
    S.RUNNING: [S.DISPATCHED, S.RUNNING],
    S.COMPLETED: [S.DISPATCHED, S.RUNNING, S.COMPLETED],
    S.FAILED: [S.DISPATCHED, S.RUNNING, S.FAILED],
    S.STOPPED: [S.DISPATCHED, S.RUNNING, S.STOPPED],
    S.TIMED_OUT: [S.DISPATCHED, S.RUNNING, S.TIMED_OUT],
    S.INTERRUPTED: [S.DISPATCHED, S.RUNNING, S.INTERRUPTED],
}
LEGAL = sorted(((src, dst) for dst, sources in ALLOWED.items() for src in sources), key=str)
ILLEGAL = sorted(((src, dst) for src in S for dst in S if src not in ALLOWED.get(dst, ())), key=str)


def _run_in(registry: Registry, create_run: Callable[..., Run], status: RunStatus) -> Run:
    run = create_run()
    for step in PATH_TO[status]:
        run = registry.record_transition(run.run_id, step, **_queue_for(step))
    assert run.status is status
    return run


def _queue_for(target: RunStatus) -> dict[str, str]:
    """A dispatch names its queue."""
    return {"queue": "cpu.n1"} if target is S.DISPATCHED else {}


# ---------------------------------------------------------------------------- create and read


def test_create_run_returns_a_queued_run_with_the_given_fields(registry: Registry) -> None:
    # Given a user's training request
    # When the run is created
    run = registry.create_run(RunSpec(
        user_id="alice",
        run_name="r1",
        base_model="yolov8n.yaml",
        dataset_dir="/d",
        task="detect",
        epochs=3,
        device="cpu",
        hyp={"lr0": 0.02, "imgsz": 320},
        max_duration=90.0,
    ))

    # Then it is queued, not yet dispatched, and keeps what was asked
    assert run.status is S.QUEUED
    assert (run.user_id, run.run_name, run.epochs, run.device) == ("alice", "r1", 3, "cpu")
    assert run.hyp == {"lr0": 0.02, "imgsz": 320}
    assert run.max_duration == 90.0
    assert (run.attempt, run.queue, run.started_at, run.finished_at) == (0, None, None, None)
    assert run.created_at.tzinfo is not None
    assert not run.is_terminal
    assert registry.get_run(run.run_id) == run


def test_run_ids_are_unique(create_run: Callable[..., Run]) -> None:
    # Given many runs
    # When they are created
    ids = {create_run().run_id for _ in range(20)}

    # Then each has its own id
    assert len(ids) == 20


def test_a_duplicate_run_name_for_the_same_user_is_rejected(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given alice has a run named r1
    first = create_run(user_id="alice", run_name="r1")

    # When she creates another run named r1
    with pytest.raises(AlreadyExists) as info:
        create_run(user_id="alice", run_name="r1")

    # Then it is refused with a message naming the run (an InvalidInput, as before), and only the first run exists
    assert isinstance(info.value, InvalidInput)
    assert "'r1'" in str(info.value)
    assert [r.run_id for r in registry.list_runs("alice")] == [first.run_id]


def test_the_same_run_name_for_another_user_is_allowed(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given alice has a run named r1
    create_run(user_id="alice", run_name="r1")

    # When bob creates a run named r1
    bobs = create_run(user_id="bob", run_name="r1")

    # Then bob has it
    assert registry.get_run(bobs.run_id, "bob").run_name == "r1"


def test_a_foreign_run_is_not_found_exactly_like_a_missing_one(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given alice's run and an id that does not exist
    run = create_run(user_id="alice")
    missing_id = "0" * 32

    # When bob asks for both
    with pytest.raises(NotFound) as foreign:
        registry.get_run(run.run_id, user_id="bob")
    with pytest.raises(NotFound) as missing:
        registry.get_run(missing_id, user_id="bob")

    # Then both raise NotFound with the same message, so bob learns nothing about alice's run
    assert str(foreign.value).replace(run.run_id, "<id>") == str(missing.value).replace(missing_id, "<id>")
    assert registry.get_run(run.run_id, user_id="alice") == run


def test_list_runs_filters_by_user_and_status_oldest_first(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given runs of two users in different states
    a1 = create_run(user_id="alice")
    b1 = create_run(user_id="bob")
    a2 = create_run(user_id="alice")
    registry.record_transition(a2.run_id, S.STOPPED)

    # When they are listed
    alices = registry.list_runs("alice")
    stopped = registry.list_runs(statuses=[S.STOPPED])
    queued = registry.list_runs(statuses=[S.QUEUED])

    # Then each list holds exactly the matching runs, oldest first
    assert [r.run_id for r in alices] == [a1.run_id, a2.run_id]
    assert [r.run_id for r in stopped] == [a2.run_id]
    assert [r.run_id for r in queued] == [a1.run_id, b1.run_id]


# ---------------------------------------------------------------------------- transitions


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s.value}->{t.value}" for s, t in LEGAL])
def test_every_allowed_transition_applies_and_is_recorded(
    registry: Registry, create_run: Callable[..., Run], source: RunStatus, target: RunStatus
) -> None:
    # Given a run in the source state
    run = _run_in(registry, create_run, source)
    rows_before = len(registry.get_transitions(run.run_id))

    # When it is moved to the target state
    moved = registry.record_transition(run.run_id, target, reason="because", **_queue_for(target))

    # Then the run is in the target state and one transition row says so
    assert moved.status is target
    assert registry.get_run(run.run_id).status is target
    rows = registry.get_transitions(run.run_id)
    assert len(rows) == rows_before + 1
    assert rows[-1][:3] == (source.value, target.value, "because")
    assert moved.reason == "because"


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s.value}->{t.value}" for s, t in ILLEGAL])
def test_every_other_transition_raises_and_changes_nothing(
    registry: Registry, create_run: Callable[..., Run], source: RunStatus, target: RunStatus
) -> None:
    # Given a run in the source state
    run = _run_in(registry, create_run, source)
    rows_before = registry.get_transitions(run.run_id)

    # When it is asked to move to a state it may not reach from there
    with pytest.raises(InvalidTransition) as info:
        registry.record_transition(run.run_id, target, **_queue_for(target))

    # Then the message gives its state, and neither the run nor its history changed
    assert source.value in str(info.value)
    assert registry.get_run(run.run_id) == run
    assert registry.get_transitions(run.run_id) == rows_before


def test_a_completed_run_cannot_be_queued_again(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a completed run
    run = _run_in(registry, create_run, S.COMPLETED)

    # When something tries to resume it
    # Then it is refused: its model is published, there is nothing to resume
    with pytest.raises(InvalidTransition):
        registry.record_transition(run.run_id, S.QUEUED)


@pytest.mark.parametrize("source", [S.STOPPED, S.TIMED_OUT, S.INTERRUPTED, S.FAILED])
def test_stopped_timed_out_interrupted_and_failed_runs_can_be_queued_again(
    registry: Registry, create_run: Callable[..., Run], source: RunStatus
) -> None:
    # Given a run that ended without completing, after it had been dispatched and started
    run = create_run()
    attempt = registry.mark_dispatched(run.run_id, "gpu.n1.0")
    registry.record_transition(run.run_id, S.RUNNING, attempt=attempt)
    registry.record_transition(run.run_id, source, attempt=attempt)

    # When it is queued again (resume)
    resumed = registry.record_transition(run.run_id, S.QUEUED, reason="resumed by user")

    # Then it waits for a device again, with no queue and no finish time
    assert resumed.status is S.QUEUED
    assert (resumed.queue, resumed.dispatched_at, resumed.finished_at) == (None, None, None)


def test_terminal_transitions_set_finished_at_and_running_sets_started_at(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given a dispatched run
    run = create_run()
    registry.mark_dispatched(run.run_id, "cpu.n1")

    # When it starts and then completes
    running = registry.record_transition(run.run_id, S.RUNNING)
    done = registry.record_transition(run.run_id, S.COMPLETED, model_name="m1")

    # Then the times and the extra column are recorded
    assert running.started_at is not None and running.finished_at is None
    assert done.finished_at is not None and done.finished_at >= running.started_at
    assert done.model_name == "m1"
    assert done.is_terminal


def test_an_explicit_started_at_is_kept(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a start time from the worker
    started = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    run = create_run()
    registry.mark_dispatched(run.run_id, "cpu.n1")

    # When the run starts with it
    running = registry.record_transition(run.run_id, S.RUNNING, started_at=started)

    # Then that time is stored, in UTC
    assert running.started_at == started


def test_a_transition_of_a_missing_run_raises_not_found(registry: Registry) -> None:
    # Given no run with this id
    # When it is moved
    # Then NotFound is raised
    with pytest.raises(NotFound):
        registry.record_transition("f" * 32, S.RUNNING)


def test_a_transition_for_a_stale_attempt_raises_and_changes_nothing(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given a run dispatched as attempt 1
    run = create_run()
    attempt = registry.mark_dispatched(run.run_id, "cpu.n1")
    assert attempt == 1

    # When a worker holding attempt 2 (or an old attempt 0) tries to start it
    with pytest.raises(InvalidTransition) as info:
        registry.record_transition(run.run_id, S.RUNNING, attempt=2)
    with pytest.raises(InvalidTransition):
        registry.record_transition(run.run_id, S.RUNNING, attempt=0)

    # Then it is refused, saying which attempt lost, and the run is still dispatched
    assert "attempt 2" in str(info.value)
    assert registry.get_run(run.run_id).status is S.DISPATCHED
    # And the owning attempt may start it
    assert registry.record_transition(run.run_id, S.RUNNING, attempt=1).status is S.RUNNING


def test_the_first_transition_row_is_the_creation(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a new run
    run = create_run()

    # When its history is read
    rows = registry.get_transitions(run.run_id)

    # Then it has one row: from nothing to queued, with a UTC time
    assert [r[:3] for r in rows] == [(None, "queued", None)]
    assert rows[0][3].tzinfo is not None


# ---------------------------------------------------------------------------- dispatch claims


def test_mark_dispatched_claims_the_run_once_and_bumps_the_attempt(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given a waiting run
    run = create_run()

    # When two dispatchers claim it
    first = registry.mark_dispatched(run.run_id, "gpu.n1.0")
    second = registry.mark_dispatched(run.run_id, "gpu.n1.1")

    # Then only the first gets it, as attempt 1 on its queue
    assert (first, second) == (1, None)
    claimed = registry.get_run(run.run_id)
    assert (claimed.status, claimed.queue, claimed.attempt) == (S.DISPATCHED, "gpu.n1.0", 1)
    assert claimed.dispatched_at is not None


@pytest.mark.parametrize("status", [S.RUNNING, S.STOPPED, S.COMPLETED])
def test_a_run_that_is_not_waiting_cannot_be_claimed(
    registry: Registry, create_run: Callable[..., Run], status: RunStatus
) -> None:
    # Given a run that is running, stopped or completed
    run = _run_in(registry, create_run, status)

    # When a dispatcher claims it
    # Then it gets nothing and the run is unchanged
    assert registry.mark_dispatched(run.run_id, "cpu.n1") is None
    assert registry.get_run(run.run_id) == run


def test_a_dispatched_run_goes_back_in_line_with_a_row(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a run dispatched as attempt 1
    run = create_run()
    registry.mark_dispatched(run.run_id, "gpu.n1.0")

    # When its message is presumed lost
    back = registry.record_transition(run.run_id, S.QUEUED, attempt=1, reason="worker gone")

    # Then it waits again, keeps its attempt count, the history says why, and it can be claimed as attempt 2
    assert (back.status, back.queue, back.dispatched_at, back.attempt) == (S.QUEUED, None, None, 1)
    assert registry.get_transitions(run.run_id)[-1][:3] == ("dispatched", "queued", "worker gone")
    assert registry.mark_dispatched(run.run_id, "cpu.n1") == 2


def test_putting_back_another_attempt_or_a_started_run_does_nothing(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given a run dispatched as attempt 1, and another that already started
    waiting = create_run()
    registry.mark_dispatched(waiting.run_id, "gpu.n1.0")
    started = create_run()
    registry.mark_dispatched(started.run_id, "gpu.n1.1")
    registry.record_transition(started.run_id, S.RUNNING, attempt=1)

    # When a stale recovery names attempt 2 for the first, and the right attempt for the started one
    # Then neither changes
    with pytest.raises(InvalidTransition):
        registry.record_transition(waiting.run_id, S.QUEUED, attempt=2, reason="stale")
    with pytest.raises(InvalidTransition):
        registry.record_transition(started.run_id, S.QUEUED, attempt=1, reason="late")
    assert registry.get_run(waiting.run_id).queue == "gpu.n1.0"
    assert registry.get_run(started.run_id).status is S.RUNNING
    assert all(row[2] not in ("stale", "late") for row in registry.get_transitions(waiting.run_id))


def test_a_dispatch_must_name_its_queue(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a waiting run
    run = create_run()

    # When it is dispatched without a queue
    # Then it is refused and still waits
    with pytest.raises(InvalidInput):
        registry.record_transition(run.run_id, S.DISPATCHED)
    assert registry.get_run(run.run_id).status is S.QUEUED


# ---------------------------------------------------------------------------- metrics


def test_metrics_are_recorded_once_per_epoch(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a running run
    run = _run_in(registry, create_run, S.RUNNING)

    # When epochs 1 and 2 are recorded, and epoch 1 again (a redelivered report)
    first = registry.record_metrics(run.run_id, 1, {"mAP50": 0.1})
    second = registry.record_metrics(run.run_id, 2, {"mAP50": 0.2})
    again = registry.record_metrics(run.run_id, 1, {"mAP50": 0.9})

    # Then the repeat is refused and the first values stay, in epoch order
    assert (first, second, again) == (True, True, False)
    assert registry.get_metrics(run.run_id) == [(1, {"mAP50": 0.1}), (2, {"mAP50": 0.2})]
    assert registry.get_run(run.run_id).last_epoch == 2


def test_metrics_of_one_run_do_not_show_up_in_another(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given two runs with the same epoch recorded
    a, b = create_run(), create_run()
    registry.record_metrics(a.run_id, 1, {"loss": 1.0})
    registry.record_metrics(b.run_id, 1, {"loss": 2.0})

    # When each run's metrics are read
    # Then each sees only its own
    assert registry.get_metrics(a.run_id) == [(1, {"loss": 1.0})]
    assert registry.get_metrics(b.run_id) == [(1, {"loss": 2.0})]


# ---------------------------------------------------------------------------- sharing one database


def test_two_registries_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    # Given two Registry objects (a producer and a worker) on the same SQLite file
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    producer, worker = Registry(url), Registry(url)
    try:
        # When the producer creates a run and the worker claims, starts and reports it
        run = producer.create_run(RunSpec(
            user_id="alice", run_name="r1", base_model="yolov8n.yaml", dataset_dir="/d",
            task="detect", epochs=3, device="cpu", hyp={}, max_duration=None,
        ))  # fmt: skip
        attempt = worker.mark_dispatched(run.run_id, "cpu.n1")
        worker.record_transition(run.run_id, S.RUNNING, attempt=attempt)
        worker.record_metrics(run.run_id, 1, {"loss": 0.5})

        # Then the producer sees all of it, and a second claim through the producer fails
        seen = producer.get_run(run.run_id, "alice")
        assert (seen.status, seen.queue, seen.attempt, seen.last_epoch) == (S.RUNNING, "cpu.n1", 1, 1)
        assert producer.get_metrics(run.run_id) == [(1, {"loss": 0.5})]
        assert producer.mark_dispatched(run.run_id, "cpu.n2") is None
    finally:
        producer.close()
        worker.close()


def test_runs_survive_reopening_the_database(tmp_path: Path) -> None:
    # Given a run written by one Registry that was then closed
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    first = Registry(url)
    run = first.create_run(RunSpec(
        user_id="alice", run_name="r1", base_model="yolov8n.yaml", dataset_dir="/d",
        task="detect", epochs=3, device="cpu", hyp={"imgsz": 64}, max_duration=None,
    ))  # fmt: skip
    first.close()

    # When a new Registry opens the same file
    second = Registry(url)
    try:
        # Then the run is there as it was
        assert second.get_run(run.run_id) == run
    finally:
        second.close()


def test_started_at_comparisons_use_aware_datetimes(registry: Registry, create_run: Callable[..., Run]) -> None:
    # Given a run that started ten seconds ago
    run = create_run()
    ten_seconds_ago = datetime.now(timezone.utc) - timedelta(seconds=10)
    registry.mark_dispatched(run.run_id, "cpu.n1")
    registry.record_transition(run.run_id, S.RUNNING, started_at=ten_seconds_ago)

    # When its age is computed the way the dispatcher does
    age = datetime.now(timezone.utc) - registry.get_run(run.run_id).started_at  # type: ignore[operator]

    # Then it is about ten seconds (no naive/aware TypeError, no timezone shift)
    assert timedelta(seconds=9) < age < timedelta(seconds=60)


def test_concurrent_transitions_record_the_state_each_one_really_left(
    registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given: a run, and four writers (each with its own connections, as separate processes have) that keep
    # moving it around the cycle running -> interrupted -> queued -> dispatched -> running
    run = create_run()
    registry.mark_dispatched(run.run_id, "cpu.n1")
    run = registry.record_transition(run.run_id, RunStatus.RUNNING)
    writers = [Registry(registry.url) for _ in range(4)]
    steps = [RunStatus.INTERRUPTED, RunStatus.QUEUED, RunStatus.DISPATCHED, RunStatus.RUNNING]

    def move(writer: Registry, to: RunStatus) -> None:
        for _ in range(40):
            with contextlib.suppress(InvalidTransition):
                writer.record_transition(run.run_id, to, **_queue_for(to))

    # When they race
    threads = [threading.Thread(target=move, args=pair) for pair in zip(writers, steps, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        writer.close()

    # Then: the recorded transitions form one chain, each starting where the one before it ended
    chain = registry.get_transitions(run.run_id)
    assert len(chain) > 3
    assert all(prev[1] == step[0] for prev, step in itertools.pairwise(chain)), [(f, t) for f, t, _, _ in chain]
    assert chain[-1][1] == registry.get_run(run.run_id).status.value
    # And the ring counts the run as waiting exactly when it is queued
    waiting = registry.waiting_users(10)
    assert waiting == ([(run.user_id, waiting[0][1])] if chain[-1][1] == "queued" else [])
