"""``EventBus``: numbered events per run, stored in the registry's event log and pushed to the run's and the
user's Redis streams."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from yolo_task_manager.broker.events import EventBus
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import Registry
from yolo_task_manager.values import Event, EventType, RunStatus


@pytest.fixture
def bus(redis_client: fakeredis.FakeRedis, keys: Keys, registry: Registry) -> EventBus:
    return EventBus(redis_client, keys, registry.events)


def _user_stream(client: fakeredis.FakeRedis, keys: Keys, user_id: str) -> list[Event]:
    return [Event.from_json(fields[b"event"]) for _, fields in client.xrange(keys.user_stream(user_id))]


def test_seq_starts_at_one_and_is_contiguous_per_run(bus: EventBus) -> None:
    # Given a run
    # When five events are published on it
    events = [bus.publish("run1", "alice", EventType.METRICS, epoch=i, metrics={"loss": 1.0 / i}) for i in range(1, 6)]

    # Then they are numbered 1..5 and the stream holds them in that order
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.seq for e in bus.history("run1")] == [1, 2, 3, 4, 5]
    assert [e.epoch for e in bus.history("run1")] == [1, 2, 3, 4, 5]


def test_each_run_has_its_own_numbering(bus: EventBus) -> None:
    # Given two runs of the same user
    # When their events interleave
    a1 = bus.publish("runA", "alice", EventType.LOG)
    b1 = bus.publish("runB", "alice", EventType.LOG)
    a2 = bus.publish("runA", "alice", EventType.LOG)
    b2 = bus.publish("runB", "alice", EventType.LOG)

    # Then each run counts from 1 on its own, and each history holds only its run
    assert (a1.seq, a2.seq, b1.seq, b2.seq) == (1, 2, 1, 2)
    assert {e.run_id for e in bus.history("runA")} == {"runA"}
    assert {e.run_id for e in bus.history("runB")} == {"runB"}


def test_history_after_seq_returns_only_later_events(bus: EventBus) -> None:
    # Given four events
    for epoch in range(1, 5):
        bus.publish("run1", "alice", EventType.METRICS, epoch=epoch)

    # When a client that saw up to seq 2 asks for the rest
    rest = bus.history("run1", after_seq=2)

    # Then it gets seq 3 and 4, and nothing when it has seen everything
    assert [e.seq for e in rest] == [3, 4]
    assert bus.history("run1", after_seq=4) == []


def test_history_of_an_unknown_run_is_empty(bus: EventBus) -> None:
    assert bus.history("never-published") == []


def test_events_appear_on_the_users_stream_and_not_on_other_users(
    bus: EventBus, redis_client: fakeredis.FakeRedis, keys: Keys
) -> None:
    # Given alice has two runs and bob one
    bus.publish("runA", "alice", EventType.STATUS, status=RunStatus.QUEUED)
    bus.publish("runB", "bob", EventType.STATUS, status=RunStatus.QUEUED)
    bus.publish("runC", "alice", EventType.STATUS, status=RunStatus.RUNNING)

    # When each user's stream is read
    alices = _user_stream(redis_client, keys, "alice")
    bobs = _user_stream(redis_client, keys, "bob")

    # Then alice's holds both of her runs in publish order, and bob's only his
    assert [(e.run_id, e.status) for e in alices] == [("runA", RunStatus.QUEUED), ("runC", RunStatus.RUNNING)]
    assert [e.run_id for e in bobs] == ["runB"]


def test_events_are_broadcast_on_the_run_and_user_channels(
    bus: EventBus, redis_client: fakeredis.FakeRedis, keys: Keys
) -> None:
    # Given a listener on a run's channel and on its user's channel
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.run_channel("run1"), keys.user_channel("alice"))
    for _ in range(2):
        assert pubsub.get_message(timeout=1)["type"] == "subscribe"  # type: ignore[index]

    # When an event is published
    published = bus.publish("run1", "alice", EventType.METRICS, epoch=1, metrics={"mAP50": 0.5})

    # Then both channels deliver the same event
    received = [pubsub.get_message(timeout=1) for _ in range(2)]
    pubsub.close()
    assert sorted(m["channel"].decode() for m in received) == sorted(  # type: ignore[index]
        [keys.run_channel("run1"), keys.user_channel("alice")]
    )
    assert all(Event.from_json(m["data"]) == published for m in received)  # type: ignore[index]


def test_publish_returns_the_event_with_enums_and_fields_round_tripped(bus: EventBus) -> None:
    # Given a terminal status event with a reason
    # When it is published
    event = bus.publish(
        "run1", "alice", EventType.STATUS, status=RunStatus.FAILED, reason="CUDA out of memory", epoch=2, epochs=10
    )

    # Then the caller and a replaying reader get enums and the same fields
    stored = bus.history("run1")[0]
    for seen in (event, stored):
        assert seen.type is EventType.STATUS
        assert seen.status is RunStatus.FAILED
        assert (seen.reason, seen.epoch, seen.epochs, seen.user_id) == ("CUDA out of memory", 2, 10, "alice")
    assert stored == event


def test_a_status_given_as_a_string_is_stored_as_the_enum(bus: EventBus) -> None:
    # Given a status passed as its plain value
    # When it is published
    event = bus.publish("run1", "alice", EventType.STATUS, status="stopped")

    # Then readers get the enum
    assert event.status is RunStatus.STOPPED
    assert bus.history("run1")[0].status is RunStatus.STOPPED


@pytest.mark.parametrize(
    "event",
    [
        Event(run_id="r", user_id="u", seq=3, type=EventType.STATUS, status=RunStatus.TIMED_OUT, reason="2h", ts=1.5),
        Event(run_id="r", user_id="u", seq=1, type=EventType.METRICS, epoch=1, epochs=3, metrics={"loss": 0.25}),
        Event(run_id="r", user_id="u", seq=9, type=EventType.CHECKPOINT, epoch=4),
        Event(run_id="r", user_id="u", seq=2, type=EventType.LOG),
    ],
    ids=["status", "metrics", "checkpoint", "log"],
)
def test_event_json_round_trip_keeps_enums(event: Event) -> None:
    # Given an event
    # When it is serialised and parsed back (str and bytes alike)
    from_str = Event.from_json(event.to_json())
    from_bytes = Event.from_json(event.to_json().encode())

    # Then it is equal, with its type and status as enums and plain JSON on the wire
    assert from_str == event == from_bytes
    assert isinstance(from_str.type, EventType)
    assert from_str.status is None or isinstance(from_str.status, RunStatus)
    wire = json.loads(event.to_json())
    assert wire["type"] == event.type.value
    assert wire["status"] == (event.status.value if event.status else None)


def test_two_buses_on_one_redis_share_the_numbering(
    redis_client: fakeredis.FakeRedis, keys: Keys, registry: Registry
) -> None:
    # Given a producer's bus and a worker's bus on the same Redis and registry
    producer, worker = EventBus(redis_client, keys, registry.events), EventBus(redis_client, keys, registry.events)

    # When both publish on the same run
    first = producer.publish("run1", "alice", EventType.STATUS, status=RunStatus.QUEUED)
    second = worker.publish("run1", "alice", EventType.STATUS, status=RunStatus.RUNNING)

    # Then the numbering continues across them
    assert (first.seq, second.seq) == (1, 2)


def test_key_prefixes_keep_deployments_apart(redis_client: fakeredis.FakeRedis, tmp_path: Path) -> None:
    # Given two deployments sharing one Redis, each with its own registry
    registries = [Registry(f"sqlite:///{tmp_path / name}.db") for name in ("prod", "test")]
    prod = EventBus(redis_client, Keys("prod"), registries[0].events)
    test = EventBus(redis_client, Keys("test"), registries[1].events)

    # When each publishes on a run with the same id
    prod.publish("run1", "alice", EventType.LOG)
    event = test.publish("run1", "alice", EventType.LOG)

    # Then each has its own numbering, history and stream
    assert event.seq == 1
    assert len(prod.history("run1")) == 1
    assert redis_client.xlen(Keys("prod").run_stream("run1")) == redis_client.xlen(Keys("test").run_stream("run1")) == 1
    for registry in registries:
        registry.close()


def test_an_event_with_an_unknown_field_is_refused_before_it_is_stored(bus: EventBus) -> None:
    # Given a run with one good event
    bus.publish("run1", "alice", EventType.STATUS, status=RunStatus.RUNNING)

    # When a publisher passes a field that events do not have
    # Then it is refused (TypeError today; InvalidInput, a ValueError, would do as well)
    with pytest.raises((TypeError, ValueError)):
        bus.publish("run1", "alice", EventType.LOG, message="hello")

    # And the run's history is still readable and holds only the good event
    assert [e.seq for e in bus.history("run1")] == [1]


def test_a_runs_feed_goes_on_past_an_earlier_end_when_the_run_was_resumed(bus: EventBus) -> None:
    from yolo_task_manager.api_client.feed import FeedSource, read_feed

    # Given a run that was stopped, resumed and completed
    for status in ("queued", "running", "stopped", "queued", "running", "completed"):
        bus.publish("r1", "alice", EventType.STATUS, status=status)

    # When its feed is read from the start
    source = FeedSource(bus.client, bus.keys, bus.event_log, patience=5.0)
    feed = list(read_feed(source, user_id="alice", run_id="r1"))

    # Then it ends at the last end, not the first
    assert [event.status.value for _, event in feed][-1] == "completed" and len(feed) == 6


def test_a_metrics_event_for_an_epoch_already_reported_is_dropped(bus: EventBus) -> None:
    # Given a run that reported epochs 1 and 2
    bus.publish("r1", "alice", EventType.METRICS, epoch=1, metrics={"loss": 1.0})
    bus.publish("r1", "alice", EventType.METRICS, epoch=2, metrics={"loss": 0.5})

    # When a resumed attempt sends epochs 1 and 2 again, then 3, with a log line between
    again = [bus.publish("r1", "alice", EventType.METRICS, epoch=e, metrics={"loss": 9.0}) for e in (1, 2)]
    log = bus.publish("r1", "alice", EventType.LOG, reason="resuming")
    third = bus.publish("r1", "alice", EventType.METRICS, epoch=3, metrics={"loss": 0.25})

    # Then the copies are dropped without using a seq; every other event is kept
    assert again == [None, None]
    assert log is not None and log.seq == 3 and third is not None and third.seq == 4
    history = bus.history("r1")
    assert [(e.type, e.epoch) for e in history] == [
        (EventType.METRICS, 1), (EventType.METRICS, 2), (EventType.LOG, None), (EventType.METRICS, 3)
    ]  # fmt: skip
    assert [e.metrics["loss"] for e in history if e.metrics] == [1.0, 0.5, 0.25]


def test_reported_epochs_are_counted_per_run(bus: EventBus) -> None:
    # Given run A at epoch 5
    bus.publish("runA", "alice", EventType.METRICS, epoch=5, metrics={})

    # When run B reports its epoch 1
    event = bus.publish("runB", "alice", EventType.METRICS, epoch=1, metrics={})

    # Then it is published
    assert event is not None and event.epoch == 1
