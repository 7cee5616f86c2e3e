"""A run's feed (``subscribe()``, SSE) and the callback subscriber across Redis outages and restarts: every
event once, in order, gaps filled from the registry, an ended run ended at once, ``BrokerUnavailable`` only
after the patience.

fakeredis stands in for Redis: ``server.connected = False`` is an outage, ``flushall()`` a restart without data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import fakeredis
import pytest

from yolo_task_manager.api_client.feed import FeedSource, read_feed, read_feed_with_ticks
from yolo_task_manager.api_client.subscriber import Subscriber
from yolo_task_manager.broker.events import EventBus
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.errors import BrokerUnavailable
from yolo_task_manager.registry import Registry
from yolo_task_manager.values import Event, EventType, RunStatus


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def bus(client: fakeredis.FakeRedis, keys: Keys, registry: Registry) -> EventBus:
    return EventBus(client, keys, registry.events)


@pytest.fixture
def source(client: fakeredis.FakeRedis, keys: Keys, registry: Registry) -> FeedSource:
    return FeedSource(client, keys, registry.events, patience=30.0)


class Reader(threading.Thread):
    """Reads a feed to its end in the background, as a web server's thread would."""

    def __init__(self, feed: Iterator[tuple[str, Event]]) -> None:
        super().__init__(daemon=True)
        self.feed = feed
        self.seen: list[tuple[str, Event]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for item in self.feed:
                self.seen.append(item)
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.error = exc

    def seqs(self) -> list[int]:
        return [event.seq for _, event in self.seen]


def _epochs(bus: EventBus, epochs: range) -> None:
    for epoch in epochs:
        bus.publish("r1", "alice", EventType.METRICS, epoch=epoch, epochs=6)


def test_a_feed_goes_on_across_an_outage_and_a_restart_without_data(
    bus: EventBus, source: FeedSource, server: fakeredis.FakeServer, client: fakeredis.FakeRedis
) -> None:
    # Given a reader of a running run that has seen its first two epochs
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    _epochs(bus, range(1, 3))
    reader = Reader(read_feed(source, user_id="alice", run_id="r1"))
    reader.start()
    assert wait_until(lambda: len(reader.seen) == 3)

    # When Redis goes away while two epochs are published, comes back empty, and the run goes on and completes
    server.connected = False
    _epochs(bus, range(3, 5))
    server.connected = True
    client.flushall()
    _epochs(bus, range(5, 7))
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.COMPLETED)
    reader.join(timeout=30)

    # Then the reader saw every seq once, in order, every epoch once, and ended at the completion
    assert not reader.is_alive() and reader.error is None
    assert reader.seqs() == list(range(1, 9))
    assert [e.epoch for _, e in reader.seen if e.type is EventType.METRICS] == [1, 2, 3, 4, 5, 6]
    assert reader.seen[-1][1].status is RunStatus.COMPLETED
    assert [event_id for event_id, _ in reader.seen] == [str(s) for s in range(1, 9)]


def test_a_gap_in_the_stream_is_filled_from_the_registry(
    client: fakeredis.FakeRedis, keys: Keys, registry: Registry, source: FeedSource, server: fakeredis.FakeServer
) -> None:
    # Given a reader, and a producer whose push of seq 2 fails while a worker pushes seq 3 (the stream skips 2)
    lost = fakeredis.FakeServer()
    producer = EventBus(fakeredis.FakeRedis(server=lost), keys, registry.events)
    worker = EventBus(client, keys, registry.events)
    worker.publish("r1", "alice", EventType.STATUS, status=RunStatus.QUEUED)
    reader = Reader(read_feed(source, user_id="alice", run_id="r1"))
    reader.start()
    assert wait_until(lambda: len(reader.seen) == 1)
    lost.connected = False

    # When seq 2 is stored without reaching Redis and seq 3 and an end reach it
    producer.publish("r1", "alice", EventType.LOG, reason="stored, never pushed")
    worker.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    worker.publish("r1", "alice", EventType.STATUS, status=RunStatus.STOPPED)
    reader.join(timeout=30)

    # Then the reader got 2 from the registry, in its place
    assert reader.error is None and reader.seqs() == [1, 2, 3, 4]
    assert reader.seen[1][1].reason == "stored, never pushed"


def test_an_event_that_never_reaches_redis_still_reaches_a_quiet_reader(
    bus: EventBus, keys: Keys, registry: Registry, source: FeedSource
) -> None:
    # Given a reader of a run whose last event so far is seq 1
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    reader = Reader(read_feed(source, user_id="alice", run_id="r1"))
    reader.start()
    assert wait_until(lambda: len(reader.seen) == 1)

    # When a process that lost Redis for good stores the run's end (its push never happens)
    lost = fakeredis.FakeServer()
    lost.connected = False
    EventBus(fakeredis.FakeRedis(server=lost), keys, registry.events).publish(
        "r1", "alice", EventType.STATUS, status=RunStatus.FAILED, reason="worker lost"
    )
    reader.join(timeout=30)

    # Then the reader finds it in the registry, and its feed ends there
    assert reader.error is None and reader.seqs() == [1, 2]
    assert reader.seen[-1][1].status is RunStatus.FAILED


def test_reconnecting_after_the_run_ended_gets_the_rest_and_the_end_at_once(bus: EventBus, source: FeedSource) -> None:
    # Given a run that completed after four events
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    _epochs(bus, range(1, 3))
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.COMPLETED)

    # When clients resume after its last event, after its second, and from the start
    # Then each gets what it lacks and its feed ends (a list() that returns: nothing waits for more)
    assert list(read_feed(source, user_id="alice", run_id="r1", after="4")) == []
    assert [e.seq for _, e in read_feed(source, user_id="alice", run_id="r1", after="2")] == [3, 4]
    assert len(list(read_feed(source, user_id="alice", run_id="r1"))) == 4


def test_a_resumed_run_that_ended_twice_ends_at_its_last_end(bus: EventBus, source: FeedSource) -> None:
    # Given a run stopped, resumed and completed, and a client that saw up to the stop
    for status in ("queued", "running", "stopped", "queued", "running", "completed"):
        bus.publish("r1", "alice", EventType.STATUS, status=status)

    # When it reconnects after the stop
    rest = list(read_feed(source, user_id="alice", run_id="r1", after="3"))

    # Then it gets the resumed part up to the completion
    assert [e.seq for _, e in rest] == [4, 5, 6] and rest[-1][1].status is RunStatus.COMPLETED


def test_a_feed_raises_broker_unavailable_after_its_patience(
    bus: EventBus, client: fakeredis.FakeRedis, keys: Keys, registry: Registry, server: fakeredis.FakeServer
) -> None:
    # Given a running run, and Redis away for good
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    server.connected = False

    # When a feed with 0.5 s of patience reads it
    feed = read_feed(FeedSource(client, keys, registry.events, patience=0.5), user_id="alice", run_id="r1")

    # Then it still delivers what the registry holds, then raises BrokerUnavailable naming the setting
    assert next(feed)[1].seq == 1
    with pytest.raises(BrokerUnavailable, match="YTM_REDIS_PATIENCE"):
        next(feed)


def test_a_quiet_feed_with_ticks_yields_none_between_events(bus: EventBus, source: FeedSource) -> None:
    # Given a queued run that stays quiet
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.QUEUED)

    # When its feed is read with a 0.2 s tick
    feed = read_feed_with_ticks(source, user_id="alice", run_id="r1", tick=0.2)

    # Then the first event comes, then ticks (what becomes ": keep-alive"), then the next event
    first = next(feed)
    assert first is not None and first[0] == "1"
    assert next(feed) is None and next(feed) is None
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.STOPPED)
    rest = [item for item in feed if item is not None]
    assert [event_id for event_id, _ in rest] == ["2"]


def test_the_user_feed_reconnects_and_fills_a_gap_of_a_run_it_saw(
    bus: EventBus, source: FeedSource, server: fakeredis.FakeServer, client: fakeredis.FakeRedis
) -> None:
    # Given a reader of alice's feed that saw her run's first event
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    reader = Reader(read_feed(source, user_id="alice", until_done=False, timeout=3.0))
    reader.start()
    assert wait_until(lambda: len(reader.seen) == 1)

    # When Redis goes away, comes back empty, a process that lost Redis stores seq 2, and epoch 1 reaches Redis
    server.connected = False
    time.sleep(0.6)  # the reader meets the outage
    server.connected = True
    client.flushall()
    lost = fakeredis.FakeServer()
    lost.connected = False
    EventBus(fakeredis.FakeRedis(server=lost), bus.keys, bus.event_log).publish("r1", "alice", EventType.LOG)
    _epochs(bus, range(1, 2))
    reader.join(timeout=30)

    # Then it saw every event of the run once, in order
    assert reader.error is None and reader.seqs() == [1, 2, 3]


def test_callbacks_see_every_event_once_across_an_outage_and_a_restart_without_data(
    bus: EventBus, source: FeedSource, server: fakeredis.FakeServer, client: fakeredis.FakeRedis
) -> None:
    # Given a subscriber following a run that reported epoch 1
    seen: list[Event] = []
    subscriber = Subscriber(source)
    subscriber.start()
    try:
        bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
        _epochs(bus, range(1, 2))
        subscriber.follow("r1", {"on_event": seen.append})
        assert wait_until(lambda: len(seen) == 2)

        # When Redis goes away during epochs 2 and 3, comes back empty, and the run completes
        server.connected = False
        _epochs(bus, range(2, 4))
        server.connected = True
        client.flushall()
        _epochs(bus, range(4, 5))
        bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.COMPLETED)

        # Then the callbacks got seq 1..6 once, in order, ending with the completion
        assert wait_until(lambda: len(seen) == 6)
        time.sleep(0.6)  # nothing more comes
        assert [e.seq for e in seen] == [1, 2, 3, 4, 5, 6]
        assert [e.epoch for e in seen if e.type is EventType.METRICS] == [1, 2, 3, 4]
        assert seen[-1].status is RunStatus.COMPLETED
    finally:
        subscriber.close()
