"""``Dispatcher.tick``: sends waiting runs to free live queues, and recovers runs whose worker vanished.

fakeredis stands in for Redis (its uptime is passed in: fakeredis has no INFO), a SQLite file (and PostgreSQL)
for the registry, and a recording ``send`` for Celery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
from fakes import FakeClock

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.registry import Registry
from yolo_task_manager.scheduling import Dispatcher
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


class Uptime:
    """Seconds the Redis server has been up, as the test says."""

    def __init__(self) -> None:
        self.seconds = 3600.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def uptime() -> Uptime:
    return Uptime()


@pytest.fixture
def make_dispatcher(
    settings: Settings,
    redis_client: fakeredis.FakeRedis,
    registry: Registry,
    send: RecordingSend,
    clock: FakeClock,
    uptime: Uptime,
) -> Callable[..., Dispatcher]:
    """A dispatcher on these fakes, with some settings changed."""

    def _make(**changes: object) -> Dispatcher:
        return Dispatcher(
            settings.replace(**changes), redis_client, registry, send, registry.record_transition, clock=clock,
            uptime=uptime,
        )  # fmt: skip

    return _make


@pytest.fixture
def dispatcher(make_dispatcher: Callable[..., Dispatcher]) -> Dispatcher:
    return make_dispatcher()


@pytest.fixture
def presence(redis_client: fakeredis.FakeRedis, settings: Settings) -> WorkerPresence:
    return WorkerPresence(redis_client, Keys(settings.key_prefix))


@pytest.fixture
def live(presence: WorkerPresence) -> Callable[..., None]:
    """``live("gpu.n1.0", ...)`` records a worker heartbeat now for each queue."""

    def _live(*queues: str) -> None:
        for queue in queues:
            presence.beat(queue)

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
    # And the registry records each as dispatched where it went
    for run_id, queue, _ in send.calls:
        sent_run = registry.get_run(run_id)
        assert (sent_run.status, sent_run.queue) == (S.DISPATCHED, queue)
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
    assert registry.get_run(run.run_id).status is S.QUEUED


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
    assert registry.get_run(pinned.run_id).status is S.QUEUED


def test_the_global_limit_holds_across_ticks(
    make_dispatcher: Callable[..., Dispatcher],
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a global limit of one, three live queues and three waiting runs
    dispatcher = make_dispatcher(global_limit=1)
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


def test_the_per_user_limit_holds_across_ticks_while_others_are_served(
    make_dispatcher: Callable[..., Dispatcher],
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a per-user limit of one, three live queues, alice with three waiting runs and bob with one
    dispatcher = make_dispatcher(per_user_limit=1)
    live("cpu.n1", "cpu.n2", "cpu.n3")
    for _ in range(3):
        create_run(user_id="alice", device="cpu")
    bobs = create_run(user_id="bob", device="cpu")

    # When the dispatcher ticks twice
    dispatcher.tick()
    dispatcher.tick()

    # Then alice has one run out, bob his one, and the third queue stays free
    users = sorted(registry.get_run(run_id).user_id for run_id, _, _ in send.calls)
    assert users == ["alice", "bob"]
    assert registry.get_run(bobs.run_id).status is S.DISPATCHED


def test_a_user_whose_runs_no_free_queue_takes_does_not_block_the_next_user(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given alice first in line with runs pinned to cuda:1 only, bob behind her with a CPU run, one CPU worker
    live("cpu.n1")
    for _ in range(3):
        create_run(user_id="alice", device="cuda:1")
    bobs = create_run(user_id="bob", device="cpu")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then bob's run goes to the CPU worker
    assert send.calls == [(bobs.run_id, "cpu.n1", 1)]


def test_one_decision_reads_a_few_users_not_the_whole_backlog(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given forty users with five waiting runs each, and one free CPU worker
    for user in range(40):
        for _ in range(5):
            create_run(user_id=f"u{user:02d}", device="cpu")
    live("cpu.n1")
    reads: list[str] = []
    waiting_runs = registry.waiting_runs

    def counted(user_id: str, devices: object, limit: int) -> list[Run]:
        reads.append(user_id)
        return waiting_runs(user_id, devices, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "waiting_runs", counted)

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it read the runs of one user (the first in the ring) and sent one of them
    assert reads == ["u00"]
    assert len(send.calls) == 1 and registry.get_run(send.calls[0][0]).user_id == "u00"


def test_users_are_served_in_turn_across_many_dispatches(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given alice queued six runs, then bob three, then carol one, and one CPU worker that finishes each at once
    live("cpu.n1")
    for user, n in (("alice", 6), ("bob", 3), ("carol", 1)):
        for _ in range(n):
            create_run(user_id=user, device="cpu")

    # When ten runs are dispatched one after another
    order = []
    for _ in range(10):
        ((run, _queue),) = dispatcher.tick()
        order.append(run.user_id)
        registry.record_transition(run.run_id, S.RUNNING, attempt=run.attempt)
        registry.record_transition(run.run_id, S.COMPLETED, attempt=run.attempt)

    # Then they take turns while more than one of them waits
    assert order == ["alice", "bob", "carol", "alice", "bob", "alice", "bob", "alice", "alice", "alice"]


# ---------------------------------------------------------------------------- recovery


def test_a_running_run_whose_lease_expired_is_requeued_and_sent_again_in_the_same_tick(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    settings: Settings,
) -> None:
    # Given a run that started longer than lease_ttl ago on gpu.n1.0, and no lease key (its worker died and the
    # lease expired), while a worker for gpu.n1.0 is live again
    live("gpu.n1.0")
    run = _start(registry, create_run(device="auto"), "gpu.n1.0", started_ago=settings.lease_ttl + 5)

    # When the dispatcher ticks once
    dispatcher.tick()

    # Then the run went running -> interrupted -> queued -> dispatched, with reasons, as attempt 2
    steps = registry.get_transitions(run.run_id)
    assert [(src, dst) for src, dst, _, _ in steps] == [
        (None, "queued"), ("queued", "dispatched"), ("dispatched", "running"), ("running", "interrupted"),
        ("interrupted", "queued"), ("queued", "dispatched"),
    ]  # fmt: skip
    assert "worker lost" in (steps[3][2] or "")
    assert send.calls == [(run.run_id, "gpu.n1.0", 2)]
    now = registry.get_run(run.run_id)
    assert (now.status, now.queue, now.attempt, now.worker_losses) == (S.DISPATCHED, "gpu.n1.0", 2, 1)


def test_a_missing_lease_is_no_evidence_while_redis_has_been_up_for_less_than_a_lease_ttl(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    send: RecordingSend,
    settings: Settings,
    uptime: Uptime,
) -> None:
    # Given a long-running run whose lease is missing because Redis just restarted without its data
    run = _start(registry, create_run(device="auto"), "gpu.n1.0", started_ago=settings.lease_ttl * 10)
    uptime.seconds = settings.lease_ttl / 2

    # When the dispatcher ticks
    dispatcher.tick()

    # Then the run keeps running (its worker takes its lease back at its next heartbeat)
    assert registry.get_run(run.run_id).status is S.RUNNING

    # And once Redis has been up for a lease TTL with the lease still missing, the run is requeued at once
    uptime.seconds = settings.lease_ttl
    dispatcher.tick()
    assert registry.get_run(run.run_id).status is S.QUEUED


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
    # Given a run that started a moment ago and whose lease is not in Redis
    live("gpu.n1.0")
    run = _start(registry, create_run(), "gpu.n1.0", started_ago=0)

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it is still running
    assert registry.get_run(run.run_id).status is S.RUNNING
    assert send.calls == []


def test_a_run_dispatched_to_a_worker_silent_for_a_lease_ttl_is_put_back_in_line_at_once(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    send: RecordingSend,
    presence: WorkerPresence,
    settings: Settings,
) -> None:
    # Given a run dispatched to gpu.gone.0, whose worker last beat just over a lease_ttl ago
    run = create_run(device="auto")
    registry.mark_dispatched(run.run_id, "gpu.gone.0")
    presence.beat("gpu.gone.0", now=time.time() - settings.lease_ttl - 1)

    # When the dispatcher ticks once
    dispatcher.tick()

    # Then the run waits again, with a history row that names the queue, and nothing is sent
    back = registry.get_run(run.run_id)
    assert (back.status, back.queue) == (S.QUEUED, None)
    last = registry.get_transitions(run.run_id)[-1]
    assert last[:2] == ("dispatched", "queued")
    assert "gpu.gone.0" in (last[2] or "")
    assert send.calls == []


def test_a_run_dispatched_to_a_worker_that_missed_a_few_beats_waits_for_it(
    make_dispatcher: Callable[..., Dispatcher],
    registry: Registry,
    create_run: Callable[..., Run],
    presence: WorkerPresence,
    settings: Settings,
) -> None:
    # Given a run dispatched to a worker that last beat well within a lease_ttl, but not within three ticks
    dispatcher = make_dispatcher(tick_interval=0.1)
    run = create_run(device="auto")
    registry.mark_dispatched(run.run_id, "gpu.slow.0")
    presence.beat("gpu.slow.0", now=time.time() - settings.lease_ttl / 2)
    assert "gpu.slow.0" not in dispatcher.live_queues()

    # When the dispatcher ticks
    dispatcher.tick()

    # Then the run stays dispatched to it
    assert registry.get_run(run.run_id).status is S.DISPATCHED


def test_an_undispatched_run_goes_to_another_live_worker_in_the_same_tick(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a run dispatched (attempt 1) to a GPU worker that is not in the live set at all, and a live CPU worker
    live("cpu.n1")
    run = create_run(device="auto")
    registry.mark_dispatched(run.run_id, "gpu.gone.0")

    # When the dispatcher ticks
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
    make_dispatcher: Callable[..., Dispatcher],
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
) -> None:
    # Given a live queue whose message for a run was lost (dispatch_timeout is 0 here)
    dispatcher = make_dispatcher(dispatch_timeout=0.0)
    live("cpu.n1")
    run = create_run(device="cpu")
    registry.mark_dispatched(run.run_id, "cpu.n1")

    # When the dispatcher ticks
    dispatcher.tick()

    # Then the run is sent again as attempt 2
    assert send.calls == [(run.run_id, "cpu.n1", 2)]
    assert "presumed lost" in (registry.get_transitions(run.run_id)[-2][2] or "")


def test_live_queues_lists_recent_workers_of_this_prefix_only_and_stale_ones_are_pruned(
    dispatcher: Dispatcher,
    redis_client: fakeredis.FakeRedis,
    live: Callable[..., None],
    presence: WorkerPresence,
    settings: Settings,
) -> None:
    # Given two workers of this deployment, one of another deployment sharing the Redis, and one long silent
    live("gpu.n1.0", "cpu.n1")
    WorkerPresence(redis_client, Keys("other")).beat("gpu.n9.0")
    presence.beat("cpu.old", now=time.time() - 10 * settings.lease_ttl)

    # When the live queues are listed, and a tick prunes
    # Then only this deployment's recent workers appear, and the silent one is forgotten (but still "seen")
    assert dispatcher.live_queues() == ["cpu.n1", "gpu.n1.0"]
    dispatcher.tick()
    assert presence.last_beat("cpu.old") is None
    assert "cpu.old" in presence.last_seen()


# ---------------------------------------------------------------------------- stop requests, give-ups


def test_a_run_whose_worker_was_lost_after_a_stop_request_ends_stopped(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    redis_client: fakeredis.FakeRedis,
    keys: Keys,
    settings: Settings,
) -> None:
    # Given a running run its user asked to stop, whose worker then vanished
    run = _start(registry, create_run(device="auto"), "gpu.n1.0", started_ago=settings.lease_ttl + 1)
    redis_client.set(keys.stop_flag(run.run_id), 1)

    # When the dispatcher ticks
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


def test_twenty_lost_workers_do_not_end_a_run_with_the_default_settings(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    send: RecordingSend,
    settings: Settings,
) -> None:
    # Given a run whose worker is lost twenty times, each time after it started
    run = create_run(device="cpu")
    for _ in range(20):
        live("cpu.n1")  # a fresh heartbeat each round: forty ticks on a loaded machine outlast one
        dispatcher.tick()  # dispatches it
        _run_id, _queue, attempt = send.calls[-1]
        started_at = datetime.now(timezone.utc) - timedelta(seconds=settings.lease_ttl + 1)
        registry.record_transition(run.run_id, S.RUNNING, attempt=attempt, started_at=started_at)
        dispatcher.tick()  # finds the lease missing: requeues and dispatches it again

    # Then it is still going, with twenty worker losses counted and no failed attempt
    now = registry.get_run(run.run_id)
    assert now.status is S.DISPATCHED
    assert (now.worker_losses, now.failed_attempts) == (20, 0)


def test_a_run_that_keeps_losing_its_worker_fails_after_max_worker_losses_saying_why(
    make_dispatcher: Callable[..., Dispatcher],
    registry: Registry,
    create_run: Callable[..., Run],
    settings: Settings,
) -> None:
    # Given max_worker_losses=2 and a run that lost its worker once before, whose worker vanished again
    dispatcher = make_dispatcher(max_worker_losses=2)
    run = _start(registry, create_run(device="auto"), "gpu.n1.0", started_ago=settings.lease_ttl + 1)
    registry.record_transition(run.run_id, S.INTERRUPTED, attempt=1, worker_losses=1)
    registry.record_transition(run.run_id, S.QUEUED)
    _start(registry, run, "gpu.n1.0", started_ago=settings.lease_ttl + 1)

    # When the dispatcher ticks
    dispatcher.tick()

    # Then it fails, saying why, instead of going round again
    failed = registry.get_run(run.run_id)
    assert failed.status is S.FAILED and failed.worker_losses == 2
    assert "gave up after 2 worker losses (max_worker_losses=2)" in (failed.reason or "")


def test_a_run_waiting_for_a_device_no_live_worker_serves_says_so_and_since_when(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    presence: WorkerPresence,
) -> None:
    # Given a CPU worker only, a GPU worker last seen ten minutes ago, and runs waiting for cuda:1 and cuda:7
    live("cpu.n1")
    presence.beat("gpu.n1.1", now=time.time() - 600)
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


def test_waiting_reasons_are_rewritten_when_the_live_workers_change_not_on_every_tick(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    live: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
) -> None:
    # Given a run for cuda:3 that no worker serves, explained by a first tick
    create_run(device="cuda:3")
    dispatcher.tick()
    reads: list[int] = []
    waiting_devices = registry.waiting_devices
    monkeypatch.setattr(registry, "waiting_devices", lambda: reads.append(1) or waiting_devices())

    # When the dispatcher ticks again with the same live workers, then after a CPU worker appears, then a
    # minute later
    dispatcher.tick()
    assert reads == []
    live("cpu.n1")
    dispatcher.tick()
    assert len(reads) == 1
    clock.advance(61)
    dispatcher.tick()

    # Then the waiting devices were read only on the change and after the minute
    assert len(reads) == 2


def test_a_run_is_requeued_at_the_first_tick_after_its_lease_expires_not_a_ttl_later(
    dispatcher: Dispatcher,
    registry: Registry,
    create_run: Callable[..., Run],
    redis_client: fakeredis.FakeRedis,
    keys: Keys,
    settings: Settings,
    clock: FakeClock,
) -> None:
    # Given a run training for a while, whose worker holds its lease at the first tick
    run = _start(registry, create_run(device="auto"), "gpu.n1.0", started_ago=settings.lease_ttl * 10)
    redis_client.set(keys.lease(run.run_id), "1")
    dispatcher.tick()
    assert registry.get_run(run.run_id).status is S.RUNNING

    # When the worker dies and its lease key expires (here: goes away), and the dispatcher ticks once more
    redis_client.delete(keys.lease(run.run_id))
    clock.advance(settings.tick_interval)
    dispatcher.tick()

    # Then that tick requeued it: no second lease TTL of its own sightings
    assert [to for _, to, _, _ in registry.get_transitions(run.run_id)][-2:] == ["interrupted", "queued"]
