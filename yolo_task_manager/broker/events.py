"""Publishing run events: numbered and stored in the registry, then pushed to Redis streams and channels."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, cast

import redis
from redis.typing import KeyT, StreamIdT

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import EventLog
from yolo_task_manager.values import Event, EventType, RunStatus

__all__ = ["EventBus", "StreamEntries", "range_stream", "read_streams", "stream_tip"]

log = logging.getLogger(__name__)

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


# Pushes arrive here in any order (two processes may publish on one run), but a stream must stay in seq order:
# an event at or below the last seq pushed for its run is not added, and readers take it from the registry
# when they see the gap it leaves. The guard key goes with a Redis that restarts empty, so numbering never
# depends on it.
_PUSH = """
if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[1]) or '0') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'seq', ARGV[1], 'event', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'seq', ARGV[1], 'event', ARGV[2])
redis.call('PUBLISH', KEYS[4], ARGV[2])
redis.call('PUBLISH', KEYS[5], ARGV[2])
return 1
"""


class EventBus:
    """Publishes events of the one schema in DESIGN.md: numbered and stored in the registry's event log (the
    durable record), then pushed to the run's and the user's Redis streams and channels (the fast path)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        event_log: EventLog,
        *,
        run_maxlen: int = 100_000,
        user_maxlen: int = 100_000,
    ):
        self.client = client
        self.keys = keys
        self.event_log = event_log
        self._script = client.register_script(_PUSH)
        self._maxlen = (run_maxlen, user_maxlen)
        self._lock = threading.Lock()
        self._unpushed: list[Event] = []

    def publish(self, run_id: str, user_id: str, type: EventType, **fields: Any) -> Event | None:
        """Number and store one event, then push it to Redis; None for a metrics event of an epoch already
        reported.

        Once stored the event is published for good: a Redis that is away does not make this raise (which
        would invite a retry that stores it twice). It stays in ``unpushed`` for ``push()``, and readers find
        it in the registry meanwhile.

        Raises:
            DatabaseUnavailable: the registry failed; nothing was stored.
        """
        # Build the event first: a bad field must fail here, not after it was stored.
        if fields.get("status") is not None:
            fields["status"] = RunStatus(fields["status"])
        event = self.event_log.append(Event(run_id=run_id, user_id=user_id, seq=0, type=type, **fields))
        if event is None:
            return None
        with self._lock:
            self._unpushed.append(event)
        try:
            self.push()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.info("run %s: event %d is stored; Redis failed (%s), so it goes out with the next push",
                     run_id, event.seq, exc)  # fmt: skip
        return event

    @property
    def unpushed(self) -> int:
        """Events stored by this process that Redis has not had yet."""
        return len(self._unpushed)

    def push(self) -> None:
        """Push the stored events Redis has not had yet, oldest first.

        Raises:
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError: Redis is away; they wait for the
                next push.
        """
        with self._lock:
            while self._unpushed:
                event = self._unpushed[0]
                k = self.keys
                self._script(
                    keys=[k.run_pushed(event.run_id), k.run_stream(event.run_id), k.user_stream(event.user_id),
                          k.run_channel(event.run_id), k.user_channel(event.user_id)],
                    args=[event.seq, event.to_json(), *self._maxlen],
                )  # fmt: skip
                self._unpushed.pop(0)

    def history(self, run_id: str, after_seq: int = 0) -> list[Event]:
        """Events of one run from the durable log, oldest first, with ``seq > after_seq``."""
        return self.event_log.read(run_id, after_seq)


def stream_tip(client: redis.Redis, stream: str) -> tuple[bytes, int] | None:
    """(entry id, seq) of the newest entry of a stream, None when it is empty: a reader that caught up from
    the registry to that seq goes on reading after that entry."""
    newest = cast(StreamEntries, client.xrevrange(stream, count=1))
    if not newest:
        return None
    entry_id, fields = newest[0]
    return entry_id, int(fields[b"seq"])
