"""The durable event log behind ``EventBus``: numbering that survives Redis losing its data, the metrics-epoch
dedupe, concurrent publishers, and a Redis outage that never makes an event stored twice.

fakeredis stands in for Redis (``server.connected = False`` is an outage, ``flushall()`` a restart without its
data); the registry runs on SQLite, and on PostgreSQL under ``-m postgres``.
"""

from __future__ import annotations

import threading

import fakeredis
import pytest

from yolo_task_manager.broker.events import EventBus
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import Registry
from yolo_task_manager.values import Event, EventType, RunStatus


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def bus(client: fakeredis.FakeRedis, keys: Keys, registry: Registry) -> EventBus:
    return EventBus(client, keys, registry.events)


def _stream(client: fakeredis.FakeRedis, keys: Keys, run_id: str = "r1") -> list[int]:
    return [Event.from_json(fields[b"event"]).seq for _, fields in client.xrange(keys.run_stream(run_id))]


def test_numbering_goes_on_after_redis_restarts_empty(bus: EventBus, client: fakeredis.FakeRedis, keys: Keys) -> None:
    # Given a run with three events
    for epoch in (1, 2, 3):
        bus.publish("r1", "alice", EventType.METRICS, epoch=epoch)

    # When Redis loses all its data, and the run goes on
    client.flushall()
    fourth = bus.publish("r1", "alice", EventType.METRICS, epoch=4)
    fifth = bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.COMPLETED)

    # Then the numbering continues at 4 (never 1 again), the history is complete, and the new stream holds 4, 5
    assert (fourth.seq, fifth.seq) == (4, 5)  # type: ignore[union-attr]
    assert [e.seq for e in bus.history("r1")] == [1, 2, 3, 4, 5]
    assert _stream(client, keys) == [4, 5]


def test_the_epoch_dedupe_survives_redis_restarting_empty(bus: EventBus, client: fakeredis.FakeRedis) -> None:
    # Given a run that reported epochs 1 and 2
    bus.publish("r1", "alice", EventType.METRICS, epoch=1)
    bus.publish("r1", "alice", EventType.METRICS, epoch=2)

    # When Redis loses its data and a resumed attempt re-sends both epochs, then the next
    client.flushall()
    again = [bus.publish("r1", "alice", EventType.METRICS, epoch=e) for e in (1, 2)]
    third = bus.publish("r1", "alice", EventType.METRICS, epoch=3)

    # Then the copies are dropped without using a seq, and each epoch is in the log once
    assert again == [None, None]
    assert third is not None and third.seq == 3
    assert [e.epoch for e in bus.history("r1")] == [1, 2, 3]


def test_an_event_published_while_redis_is_away_is_stored_once_and_pushed_when_it_is_back(
    bus: EventBus, server: fakeredis.FakeServer, client: fakeredis.FakeRedis, keys: Keys
) -> None:
    # Given a run with one event, and then Redis away
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    server.connected = False

    # When an event is published, and its push is retried while Redis is still away
    event = bus.publish("r1", "alice", EventType.METRICS, epoch=1)
    with pytest.raises(Exception, match="connection error"):
        bus.push()

    # Then it is stored (numbered 2) and waits; once Redis is back a push sends it, once
    assert event is not None and event.seq == 2 and bus.unpushed == 1
    server.connected = True
    bus.push()
    bus.push()
    assert bus.unpushed == 0
    assert [e.seq for e in bus.history("r1")] == [1, 2]
    assert _stream(client, keys) == [1, 2]


def test_a_late_push_of_an_older_seq_never_puts_the_stream_out_of_order(
    client: fakeredis.FakeRedis, keys: Keys, registry: Registry, server: fakeredis.FakeServer
) -> None:
    # Given two processes on one run: the first stores seq 1 while its Redis connection is down
    first = EventBus(client, keys, registry.events)
    second = EventBus(fakeredis.FakeRedis(server=server), keys, registry.events)
    server.connected = False
    first.publish("r1", "alice", EventType.STATUS, status=RunStatus.QUEUED)
    server.connected = True

    # When the second pushes seq 2, and the first's seq 1 comes after it
    second.publish("r1", "alice", EventType.STATUS, status=RunStatus.RUNNING)
    first.push()

    # Then the stream holds only 2 (a reader fills 1 from the registry), and the log holds both
    assert _stream(client, keys) == [2]
    assert first.unpushed == 0
    assert [e.seq for e in registry.events.read("r1")] == [1, 2]


def test_concurrent_publishers_on_one_run_get_distinct_contiguous_seqs(
    client: fakeredis.FakeRedis, keys: Keys, registry: Registry
) -> None:
    # Given four buses (as four processes would have) on one run
    buses = [EventBus(client, keys, registry.events) for _ in range(4)]
    seqs: list[int] = []
    lock = threading.Lock()

    def publish_many(bus: EventBus) -> None:
        for _ in range(15):
            event = bus.publish("r1", "alice", EventType.LOG, reason="line")
            assert event is not None
            with lock:
                seqs.append(event.seq)

    # When they publish at the same time
    threads = [threading.Thread(target=publish_many, args=(b,)) for b in buses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Then every seq from 1 to 60 was given out once, and the log holds them in order
    assert sorted(seqs) == list(range(1, 61))
    assert [e.seq for e in registry.events.read("r1")] == list(range(1, 61))


def test_the_newest_event_and_reads_after_a_seq_with_a_limit(bus: EventBus, registry: Registry) -> None:
    # Given a run with five events, the last a completion
    for _ in range(4):
        bus.publish("r1", "alice", EventType.LOG)
    bus.publish("r1", "alice", EventType.STATUS, status=RunStatus.COMPLETED)

    # When the log is read in pieces, and its newest event asked for
    # Then each piece is in order and the newest is the completion; an unknown run has none
    assert [e.seq for e in registry.events.read("r1", after_seq=1, limit=2)] == [2, 3]
    newest = registry.events.newest("r1")
    assert newest is not None and (newest.seq, newest.status) == (5, RunStatus.COMPLETED)
    assert registry.events.newest("other") is None and registry.events.read("other") == []
