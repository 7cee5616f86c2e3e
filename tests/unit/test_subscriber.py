"""``Subscriber``: a run's events reach the caller's callbacks in order, once, and until the run ends.

fakeredis serves XREAD with BLOCK in-process; the subscriber thread is closed after each test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from yolo_task_manager.api_client.feed import FeedSource
from yolo_task_manager.api_client.subscriber import Subscriber
from yolo_task_manager.broker.events import EventBus
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import Registry
from yolo_task_manager.values import TERMINAL, Event, EventType, RunStatus


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Recorder:
    """Callbacks that append what they are given, as a user's callbacks would."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, int | None, dict[str, float]]] = []
        self.statuses: list[tuple[str, RunStatus | None, str | None]] = []
        self.events: list[Event] = []

    def on_metrics(self, run_id: str, epoch: int | None, metrics: dict[str, float]) -> None:
        self.metrics.append((run_id, epoch, metrics))

    def on_status(self, run_id: str, status: RunStatus | None, reason: str | None) -> None:
        self.statuses.append((run_id, status, reason))

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def callbacks(self) -> dict[str, Callable[..., Any]]:
        return {"on_metrics": self.on_metrics, "on_status": self.on_status, "on_event": self.on_event}

    def epochs(self, run_id: str = "run1") -> list[int | None]:
        return [epoch for rid, epoch, _ in self.metrics if rid == run_id]

    def saw_status(self, status: RunStatus, run_id: str = "run1") -> bool:
        return any(rid == run_id and s is status for rid, s, _ in self.statuses)


@pytest.fixture
def bus(redis_client: fakeredis.FakeRedis, keys: Keys, registry: Registry) -> EventBus:
    return EventBus(redis_client, keys, registry.events)


@pytest.fixture
def source(redis_client: fakeredis.FakeRedis, keys: Keys, registry: Registry) -> FeedSource:
    return FeedSource(redis_client, keys, registry.events, patience=5.0)


class ClosableSubscriber(Subscriber):
    """Remembers the runs it was asked to follow, so that teardown can wake its blocking read."""

    def __init__(self, source: FeedSource) -> None:
        super().__init__(source)
        self.run_ids: set[str] = set()

    def follow(self, run_id: str, callbacks: Any = None) -> None:
        self.run_ids.add(run_id)
        super().follow(run_id, callbacks)


@pytest.fixture
def subscriber(source: FeedSource, bus: EventBus) -> Iterator[Subscriber]:
    sub = ClosableSubscriber(source)
    sub.start()
    yield sub
    sub.close()
    # An event on each followed stream ends the blocking XREAD now rather than after its 0.5 s timeout.
    for run_id in sub.run_ids:
        bus.publish(run_id, "teardown", EventType.LOG)
    sub.join(timeout=5)
    assert not sub.is_alive(), "the subscriber thread did not stop within 5 s of close()"


def _metrics(bus: EventBus, epoch: int, run_id: str = "run1") -> Event:
    return bus.publish(run_id, "alice", EventType.METRICS, epoch=epoch, epochs=10, metrics={"loss": 1.0 / epoch})


def _status(bus: EventBus, status: RunStatus, run_id: str = "run1", reason: str | None = None) -> Event:
    return bus.publish(run_id, "alice", EventType.STATUS, status=status, reason=reason)


def test_metrics_reach_on_metrics_in_order_once_including_earlier_events(subscriber: Subscriber, bus: EventBus) -> None:
    # Given two epochs were published before anyone followed the run
    _status(bus, RunStatus.RUNNING)
    _metrics(bus, 1)
    _metrics(bus, 2)
    recorder = Recorder()

    # When the caller follows it, and three more epochs and the completion follow
    subscriber.follow("run1", recorder.callbacks())
    for epoch in (3, 4, 5):
        _metrics(bus, epoch)
    _status(bus, RunStatus.COMPLETED)
    assert wait_until(lambda: recorder.saw_status(RunStatus.COMPLETED))

    # Then every epoch arrived once, in order, with its values, before the completion
    assert recorder.epochs() == [1, 2, 3, 4, 5]
    assert recorder.metrics[0] == ("run1", 1, {"loss": 1.0})
    assert [s for _, s, _ in recorder.statuses] == [RunStatus.RUNNING, RunStatus.COMPLETED]
    assert [e.seq for e in recorder.events] == list(range(1, 8))


def test_on_status_gets_the_status_and_reason(subscriber: Subscriber, bus: EventBus) -> None:
    # Given a run that fails with a reason
    recorder = Recorder()
    subscriber.follow("run1", {"on_status": recorder.on_status})

    # When its status events are published
    _status(bus, RunStatus.RUNNING)
    _status(bus, RunStatus.FAILED, reason="CUDA out of memory")

    # Then on_status sees both, as enums, with the reason
    assert wait_until(lambda: len(recorder.statuses) == 2)
    assert recorder.statuses == [("run1", RunStatus.RUNNING, None), ("run1", RunStatus.FAILED, "CUDA out of memory")]


def test_callbacks_of_one_run_never_see_another_runs_events(subscriber: Subscriber, bus: EventBus) -> None:
    # Given two followed runs with their own callbacks
    first, second = Recorder(), Recorder()
    subscriber.follow("runA", first.callbacks())
    subscriber.follow("runB", second.callbacks())

    # When both publish epochs and complete
    for epoch in (1, 2):
        _metrics(bus, epoch, run_id="runA")
        _metrics(bus, epoch * 10, run_id="runB")
    _status(bus, RunStatus.COMPLETED, run_id="runA")
    _status(bus, RunStatus.COMPLETED, run_id="runB")

    # Then each recorder holds only its own run
    assert wait_until(lambda: first.saw_status(RunStatus.COMPLETED, "runA"))
    assert wait_until(lambda: second.saw_status(RunStatus.COMPLETED, "runB"))
    assert first.epochs("runA") == [1, 2] and first.epochs("runB") == []
    assert second.epochs("runB") == [10, 20] and second.epochs("runA") == []


def test_a_raising_callback_does_not_stop_later_events(subscriber: Subscriber, bus: EventBus) -> None:
    # Given an on_metrics that raises on epoch 1
    seen: list[int | None] = []

    def flaky(run_id: str, epoch: int | None, metrics: dict[str, float]) -> None:
        seen.append(epoch)
        if epoch == 1:
            raise RuntimeError("user bug")

    subscriber.follow("run1", {"on_metrics": flaky})

    # When two epochs are published
    _metrics(bus, 1)
    _metrics(bus, 2)

    # Then the second still arrives
    assert wait_until(lambda: seen == [1, 2])


@pytest.mark.parametrize("terminal", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
def test_following_ends_at_a_terminal_status_and_follow_again_continues_without_repeats(
    subscriber: Subscriber, bus: EventBus, terminal: RunStatus
) -> None:
    # Given a followed run that reached a terminal status after two epochs
    recorder, marker = Recorder(), Recorder()
    subscriber.follow("run1", recorder.callbacks())
    subscriber.follow("other", marker.callbacks())
    _metrics(bus, 1)
    _metrics(bus, 2)
    _status(bus, terminal)
    assert wait_until(lambda: recorder.saw_status(terminal))

    # When the run goes on (resumed) and publishes more, while another run's event is delivered after it
    _status(bus, RunStatus.QUEUED)
    _metrics(bus, 3)
    _metrics(bus, 1, run_id="other")
    assert wait_until(lambda: marker.epochs("other") == [1])

    # Then nothing more of the ended run reached its callbacks
    assert recorder.epochs() == [1, 2]

    # When the caller follows the run again without callbacks (as resume() does)
    subscriber.follow("run1")
    _metrics(bus, 4)
    # (an event on the other run ends the subscriber's current blocking read, so it picks run1 up at once)
    _metrics(bus, 2, run_id="other")

    # Then the remembered callbacks get what came since, once each, nothing repeated
    assert wait_until(lambda: recorder.epochs() == [1, 2, 3, 4])
    assert [s for _, s, _ in recorder.statuses] == [terminal, RunStatus.QUEUED]
    assert [e.seq for e in recorder.events] == [1, 2, 3, 4, 5, 6]


def test_follow_without_callbacks_for_an_unknown_run_does_nothing(subscriber: Subscriber, bus: EventBus) -> None:
    # Given a run nobody registered callbacks for, and a run that is followed
    recorder = Recorder()
    subscriber.follow("ghost")
    subscriber.follow("run1", recorder.callbacks())

    # When both publish
    _metrics(bus, 1, run_id="ghost")
    _metrics(bus, 1)

    # Then the followed run's event arrives and the subscriber is still alive
    assert wait_until(lambda: recorder.epochs() == [1])
    assert subscriber.is_alive()


def test_close_stops_the_thread_even_when_nothing_is_followed(source: FeedSource) -> None:
    # Given an idle subscriber
    sub = Subscriber(source)
    sub.start()

    # When it is closed
    sub.close()
    sub.join(timeout=5)

    # Then its thread ends
    assert not sub.is_alive()


def test_events_after_a_terminal_status_in_the_same_batch_are_delivered_after_follow_again(
    subscriber: Subscriber, bus: EventBus
) -> None:
    # Given a run that was stopped and resumed before anyone followed it: all these events are in its stream
    _metrics(bus, 1)
    _status(bus, RunStatus.STOPPED)
    _status(bus, RunStatus.QUEUED)
    _metrics(bus, 2)
    recorder = Recorder()

    # When the caller follows it, sees the stop, and follows again (as resume() does)
    subscriber.follow("run1", recorder.callbacks())
    assert wait_until(lambda: recorder.saw_status(RunStatus.STOPPED))
    subscriber.follow("run1")

    # Then the events after the stop arrive too
    assert wait_until(lambda: recorder.epochs() == [1, 2], timeout=1.5)


def test_a_resume_from_inside_on_status_keeps_the_run_followed(subscriber: Subscriber, bus: EventBus) -> None:
    # Given callbacks whose on_status resumes a timed-out run right away (follow() is what resume() calls)
    epochs: list[int | None] = []
    resumed = threading.Event()

    def on_status(run_id: str, status: RunStatus | None, reason: str | None) -> None:
        if status is RunStatus.TIMED_OUT:
            subscriber.follow(run_id)
            resumed.set()

    subscriber.follow("run1", {"on_status": on_status, "on_metrics": lambda r, e, m: epochs.append(e)})
    _status(bus, RunStatus.TIMED_OUT)
    assert resumed.wait(5)

    # When the resumed run reports its next epoch
    _status(bus, RunStatus.QUEUED)
    _metrics(bus, 5)

    # Then on_metrics receives it
    assert wait_until(lambda: epochs == [5], timeout=1.5)
