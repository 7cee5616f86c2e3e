"""Publishing run events: one Lua script numbers, stores and broadcasts each, atomically."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis
from redis.typing import KeyT, StreamIdT

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.values import Event, EventType, RunStatus

__all__ = ["EventBus", "StreamEntries", "range_stream", "read_streams"]

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
"""A stream's entries as redis-py returns them (no ``decode_responses``): (entry id, fields)."""


def read_streams(
    client: redis.Redis, cursors: Mapping[str, bytes | str], *, count: int, block: int
) -> list[tuple[bytes, StreamEntries]]:
    """XREAD after each cursor: (stream name, entries) for the streams that had new entries."""
    streams: dict[KeyT, StreamIdT] = {name: cursor for name, cursor in cursors.items()}
    return cast(list[tuple[bytes, StreamEntries]], client.xread(streams, count=count, block=block) or [])


def range_stream(client: redis.Redis, stream: str, start: str = "-", count: int | None = None) -> StreamEntries:
    """XRANGE from ``start`` ("(id" excludes it) to the end."""
    return cast(StreamEntries, client.xrange(stream, min=start, count=count) or [])


# seq, stream and channels are updated in one step so that the stream order is the seq order
# and a subscriber never sees seq n+1 before n. A metrics event (ARGV[4] is its epoch) for an epoch
# already reported is dropped: a resumed attempt re-sends the epochs its checkpoint holds.
_PUBLISH = """
if ARGV[4] ~= '' then
  if tonumber(ARGV[4]) <= tonumber(redis.call('GET', KEYS[6]) or '0') then
    return false
  end
  redis.call('SET', KEYS[6], ARGV[4])
end
local seq = redis.call('INCR', KEYS[1])
local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'seq', seq, 'event', event)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'seq', seq, 'event', event)
redis.call('PUBLISH', KEYS[4], event)
redis.call('PUBLISH', KEYS[5], event)
return event
"""


class EventBus:
    """Publishes events of the one schema in DESIGN.md on a run's channel and stream."""

    def __init__(self, client: redis.Redis, keys: Keys, *, run_maxlen: int = 100_000, user_maxlen: int = 100_000):
        self.client = client
        self.keys = keys
        self._script = client.register_script(_PUBLISH)
        self._maxlen = (run_maxlen, user_maxlen)

    def publish(self, run_id: str, user_id: str, type: EventType, **fields: Any) -> Event | None:
        """Number, store and broadcast one event; None for a metrics event of an epoch already reported."""
        # Build the event first: a bad field must fail here, not after it was stored.
        if fields.get("status") is not None:
            fields["status"] = RunStatus(fields["status"])
        event = Event(run_id=run_id, user_id=user_id, seq=0, type=type, **fields)
        body = json.loads(event.to_json())
        del body["seq"]
        k = self.keys
        raw = self._script(
            keys=[
                k.run_seq(run_id),
                k.run_stream(run_id),
                k.user_stream(user_id),
                k.run_channel(run_id),
                k.user_channel(user_id),
                k.run_reported_epoch(run_id),
            ],
            args=[
                json.dumps(body, separators=(",", ":")),
                *self._maxlen,
                event.epoch if type is EventType.METRICS and event.epoch is not None else "",
            ],
        )
        return Event.from_json(raw) if raw else None

    def history(self, run_id: str, after_seq: int = 0) -> list[Event]:
        """Events of one run from the stream, oldest first, with ``seq > after_seq``."""
        events = (
            Event.from_json(fields[b"event"]) for _, fields in range_stream(self.client, self.keys.run_stream(run_id))
        )
        return [e for e in events if e.seq > after_seq]
