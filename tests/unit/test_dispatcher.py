"""``Dispatcher.tick``: sends waiting runs to free live queues, and recovers runs whose worker vanished.

fakeredis stands in for Redis, a SQLite file for the registry, and a recording ``send`` for Celery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
from fakes import FakeClock

from yolo_task_manager.scheduling import Dispatcher
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import Registry
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Run, RunStatus

S = RunStatus


class RecordingSend:
    """Stands in for ``apply_async``: remembers (run_id, queue, attempt) of each message."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, run: Run, queue: str, attempt: int) -> None:
        self.calls.append((run.run_id, queue, attempt))


@pytest.fixture
def send() -> RecordingSend:
    return RecordingSend()


@pytest.fixture
def dispatcher(
    settings: Settings, redis_client: fakeredis.FakeRedis, registry: Registry, send: RecordingSend, clock: FakeClock
) -> Dispatcher:
    return Dispatcher(settings, redis_client, registry, send, registry.record_transition, clock=clock)


@pytest.fixture
def live(redis_client: fakeredis.FakeRedis, settings: Settings) -> Callable[..., None]:
    """``live("gpu.n1.0", ...)`` registers a worker heartbeat for each queue."""

    def _live(*queues: str) -> None:
        for queue in queues:
            redis_client.set(Keys(settings.key_prefix).worker(queue), "1", ex=60)

    return _live


def _start(registry: Registry, run: Run, queue: str, *, started_ago: float = 0.0) -> Run:
    attempt = registry.mark_dispatched(run.run_id, queue)
    started_at = datetime.now(timezone.utc) - timedelta(seconds=started_ago)
    return registry.record_transition(run.run_id, S.RUNNING, attempt=attempt, started_at=started_at)


# ---------------------------------------------------------------------------- dispatch


def test_tick_sends_at_most_one_run_per_free_queue_and_none_to_a_busy_one(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    redis_client: fakeredis.FakeRedis,
    settings: Settings,
) -> None:
    # Given three live queues, one of them training a run (its lease is held), and five waiting runs
    live("gpu.n1.0", "gpu.n1.1", "cpu.n1")
    busy = _start(registry, create_run(user_id="zoe", device="auto"), "gpu.n1.0")
    redis_client.set(Keys(settings.key_prefix).lease(busy.run_id), "1", ex=60)
    waiting = [create_run(user_id=u, device="auto") for u in ("alice", "bob", "carol", "alice", "bob")]

    # When the dispatcher ticks
    sent = dispatcher.tick()

    # Then two runs go out, one to each idle queue, as attempt 1
    assert sorted(q for _, q, _ in send.calls) == ["cpu.n1", "gpu.n1.1"]
    assert all(attempt == 1 for _, _, attempt in send.calls)
    assert len(sent) == 2
    # And the registry records where each went
    for run_id, queue, _ in send.calls:
        assert registry.get_run(run_id).queue == queue
    # And the running run was left alone
    assert registry.get_run(busy.run_id).status is S.RUNNING
    assert {run_id for run_id, _, _ in send.calls} <= {r.run_id for r in waiting}


def test_a_second_tick_sends_nothing_while_the_queues_are_occupied(
    dispatcher: Dispatcher, create_run: Callable[..., Run], live: Callable[..., None], send: RecordingSend
) -> None:
    # Given one live queue and two waiting runs, after a first tick
    live("cpu.n1")
    create_run(user_id="alice")
    create_run(user_id="bob")
    dispatcher.tick()

    # When the dispatcher ticks again before the first run started
    dispatcher.tick()

    # Then only one message was ever sent
    assert len(send.calls) == 1


def test_no_live_worker_means_nothing_is_sent(
    dispatcher: Dispatcher, registry: Registry, create_run: Callable[..., Run], send: RecordingSend
) -> None:
    # Given a waiting run and no worker heartbeat at all
    run = create_run()

    # When the dispatcher ticks
    sent = dispatcher.tick()

    # Then it keeps waiting
    assert sent == [] and send.calls == []
    assert registry.get_run(run.run_id).queue is None


def test_a_run_goes_only_to_a_queue_its_device_allows(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a CPU worker only, and a run pinned to cuda:1 plus a CPU run
    live("cpu.n1")
    pinned = create_run(device="cuda:1")
    cpu_run = create_run(device="cpu")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then the CPU run goes, and the pinned run waits
    assert send.calls == [(cpu_run.run_id, "cpu.n1", 1)]
    assert registry.get_run(pinned.run_id).queue is None


def test_the_global_limit_holds_across_ticks(
    settings: Settings,
    redis_client: fakeredis.FakeRedis,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a global limit of one, three live queues and three waiting runs
    dispatcher = Dispatcher(settings.replace(global_limit=1), redis_client, registry, send, registry.record_transition)
    live("gpu.n1.0", "gpu.n1.1", "cpu.n1")
    for user in ("alice", "bob", "carol"):
        create_run(user_id=user)

    # When the dispatcher ticks twice
    dispatcher.tick()
    dispatcher.tick()

    # Then only one run was sent
    assert len(send.calls) == 1


def test_round_robin_is_remembered_between_ticks(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given alice queued three runs before bob queued one, and one CPU worker
    live("cpu.n1")
    for _ in range(3):
        create_run(user_id="alice")
    bobs = create_run(user_id="bob")

    # When alice's first run is sent, finishes, and the dispatcher ticks again
    dispatcher.tick()
    first_id, _, attempt = send.calls[0]
    registry.record_transition(first_id, S.RUNNING, attempt=attempt)
    registry.record_transition(first_id, S.COMPLETED, attempt=attempt)
    dispatcher.tick()

    # Then bob's run is next, not alice's second
    assert registry.get_run(first_id).user_id == "alice"
    assert send.calls[1][0] == bobs.run_id


# ---------------------------------------------------------------------------- recovery


def test_a_running_run_without_lease_past_the_ttl_is_interrupted_requeued_and_sent_again(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    settings: Settings,
    clock: FakeClock,
) -> None:
    # Given a run that started longer than lease_ttl ago on gpu.n1.0, and no lease key (its worker died),
    # while a worker for gpu.n1.0 is live again
    live("gpu.n1.0")
    run = _start(registry, create_run(device="auto"), "gpu.n1.0", started_ago=settings.lease_ttl + 5)

    # When the dispatcher sees the lease missing, and still missing a lease_ttl later
    dispatcher.tick()
    assert registry.get_run(run.run_id).status is RunStatus.RUNNING  # a Redis restart looks like this too
    clock.advance(settings.lease_ttl)
    dispatcher.tick()

    # Then the run went running -> interrupted -> queued, with reasons, and was sent again as attempt 2
    rows = [(src, dst) for src, dst, _, _ in registry.get_transitions(run.run_id)]
    assert rows == [(None, "queued"), ("queued", "running"), ("running", "interrupted"), ("interrupted", "queued")]
    reasons = [reason for _, dst, reason, _ in registry.get_transitions(run.run_id) if dst == "interrupted"]
    assert "worker lost" in reasons[0]
    assert send.calls == [(run.run_id, "gpu.n1.0", 2)]
    now = registry.get_run(run.run_id)
    assert (now.status, now.queue, now.attempt) == (S.QUEUED, "gpu.n1.0", 2)


def test_a_running_run_whose_lease_is_held_is_left_alone(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    settings: Settings,
    redis_client: fakeredis.FakeRedis,
) -> None:
    # Given a long-running run whose worker keeps its lease
    live("gpu.n1.0")
    run = _start(registry, create_run(), "gpu.n1.0", started_ago=settings.lease_ttl * 100)
    redis_client.set(Keys(settings.key_prefix).lease(run.run_id), "1", ex=60)

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it keeps running and nothing is sent
    assert registry.get_run(run.run_id).status is S.RUNNING
    assert send.calls == []


def test_a_run_that_just_started_gets_a_grace_period_to_take_its_lease(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a run that started a moment ago and whose worker has not written its lease yet
    live("gpu.n1.0")
    run = _start(registry, create_run(), "gpu.n1.0", started_ago=0)

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it is still running
    assert registry.get_run(run.run_id).status is S.RUNNING
    assert send.calls == []


def test_a_run_dispatched_to_a_queue_without_worker_is_put_back_in_line(
    dispatcher: Dispatcher, registry: Registry, create_run: Callable[..., Run], send: RecordingSend, clock: FakeClock
) -> None:
    # Given a run dispatched to gpu.gone.0, whose worker no longer heartbeats
    run = create_run(device="auto")
    registry.mark_dispatched(run.run_id, "gpu.gone.0")

    # When the dispatcher sees no live worker for it, and still none a lease_ttl later
    dispatcher.tick()
    assert registry.get_run(run.run_id).queue == "gpu.gone.0"
    clock.advance(dispatcher.settings.lease_ttl)
    dispatcher.tick()

    # Then the run waits again, with a history row that names the queue
    back = registry.get_run(run.run_id)
    assert (back.status, back.queue) == (S.QUEUED, None)
    last = registry.get_transitions(run.run_id)[-1]
    assert last[:2] == ("queued", "queued")
    assert "gpu.gone.0" in (last[2] or "")
    assert send.calls == []


def test_an_undispatched_run_goes_to_another_live_worker_in_the_same_tick(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    clock: FakeClock,
) -> None:
    # Given a run dispatched (attempt 1) to a vanished GPU worker, and a live CPU worker
    live("cpu.n1")
    run = create_run(device="auto")
    registry.mark_dispatched(run.run_id, "gpu.gone.0")

    # When the dispatcher has seen that worker gone for a lease_ttl
    dispatcher.tick()
    clock.advance(dispatcher.settings.lease_ttl)
    dispatcher.tick()

    # Then it is sent to the CPU worker as attempt 2, so a late start of attempt 1 is refused
    assert send.calls == [(run.run_id, "cpu.n1", 2)]


def test_a_recently_dispatched_run_on_a_live_queue_is_not_sent_twice(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a run dispatched a moment ago to a live queue, not started yet
    live("cpu.n1", "cpu.n2")
    run = create_run(device="cpu")
    registry.mark_dispatched(run.run_id, "cpu.n1")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it stays where it is and no second message is sent
    assert registry.get_run(run.run_id).queue == "cpu.n1"
    assert send.calls == []


def test_a_dispatched_run_never_started_after_the_dispatch_timeout_is_sent_again(
    settings: Settings,
    redis_client: fakeredis.FakeRedis,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a live queue whose message for a run was lost (dispatch_timeout is 0 here)
    dispatcher = Dispatcher(
        settings.replace(dispatch_timeout=0.0), redis_client, registry, send, registry.record_transition
    )
    live("cpu.n1")
    run = create_run(device="cpu")
    registry.mark_dispatched(run.run_id, "cpu.n1")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then the run is sent again as attempt 2
    assert send.calls == [(run.run_id, "cpu.n1", 2)]
    assert "presumed lost" in (registry.get_transitions(run.run_id)[-1][2] or "")


def test_live_queues_lists_registered_workers_of_this_prefix_only(
    dispatcher: Dispatcher, redis_client: fakeredis.FakeRedis, live: Callable[..., None]
) -> None:
    # Given two workers of this deployment and one of another deployment sharing the Redis
    live("gpu.n1.0", "cpu.n1")
    redis_client.set(Keys("other").worker("gpu.n9.0"), "1")

    # When the live queues are listed
    # Then only this deployment's workers appear
    assert dispatcher.live_queues() == ["cpu.n1", "gpu.n1.0"]


# ---------------------------------------------------------------------------- stop requests, give-ups


def test_a_run_whose_worker_was_lost_after_a_stop_request_ends_stopped(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    redis_client,
    keys,
    settings,
    clock: FakeClock,
) -> None:
    # Given a running run its user asked to stop, whose worker then vanished
    run = _start(registry, create_run(device="auto"), "gpu.n1.0")
    redis_client.set(keys.stop_flag(run.run_id), 1)

    # When the dispatcher has seen its lease missing for a lease_ttl
    dispatcher.tick()
    clock.advance(settings.lease_ttl)
    dispatcher.tick()

    # Then it ends stopped, not back in the queue
    assert registry.get_run(run.run_id).status is S.STOPPED
    assert [to for _, to, _, _ in registry.get_transitions(run.run_id)][-2:] == ["interrupted", "stopped"]


def test_a_run_left_interrupted_is_requeued(
    dispatcher: Dispatcher, registry: Registry, create_run: Callable[..., Run]
) -> None:
    # Given a run whose requeue was cut short after it became interrupted
    run = _start(registry, create_run(device="auto"), "gpu.n1.0")
    registry.record_transition(run.run_id, S.INTERRUPTED, attempt=run.attempt, reason="worker shut down")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it waits in the queue again
    assert registry.get_run(run.run_id).status is S.QUEUED


def test_a_run_that_keeps_losing_its_worker_fails_after_max_attempts(
    settings: Settings,
    redis_client,
    registry: Registry,
    create_run: Callable[..., Run],
    send: RecordingSend,
    clock: FakeClock,
) -> None:
    # Given a run at its last allowed attempt whose worker vanished
    dispatcher = Dispatcher(
        settings.replace(max_attempts=1), redis_client, registry, send, registry.record_transition, clock=clock
    )
    run = _start(registry, create_run(device="auto"), "gpu.n1.0")

    # When the dispatcher has seen its lease missing for a lease_ttl
    dispatcher.tick()
    clock.advance(settings.lease_ttl)
    dispatcher.tick()

    # Then it fails, saying why, instead of going round again
    failed = registry.get_run(run.run_id)
    assert failed.status is S.FAILED and "giving up after 1 attempts" in (failed.reason or "")


def test_a_run_waiting_for_a_device_no_live_worker_serves_says_so_and_since_when(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    redis_client: fakeredis.FakeRedis,
    keys: Keys,
) -> None:
    # Given a CPU worker only, a GPU worker last seen ten minutes ago, and runs waiting for cuda:1 and cuda:7
    live("cpu.n1")
    redis_client.hset(keys.worker_seen, "gpu.n1.1", time.time() - 600)
    pinned = create_run(device="cuda:1")
    never = create_run(device="cuda:7")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then both still wait, and each run's reason says no live worker serves its device, and since when
    assert registry.get_run(pinned.run_id).reason == (
        "waiting: no live worker serves device 'cuda:1' (the last one was seen 10 min ago); "
        "start `ytm worker --device ...`"
    )
    assert "'cuda:7' (none has been seen)" in (registry.get_run(never.run_id).reason or "")
    assert registry.get_run(pinned.run_id).status is S.QUEUED
