"""Reading a Redis event stream as a feed: history, then live, with resume tokens for SSE."""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis

from yolo_task_manager.broker.events import range_stream, read_streams
from yolo_task_manager.values import TERMINAL, Event

__all__ = ["read_feed"]


def read_feed(
    client: redis.Redis,
    stream: str,
    *,
    per_run: bool,
    after: str | None = None,
    until_done: bool = True,
    timeout: float | None = None,
) -> Iterator[tuple[str, Event]]:
    """``(event_id, event)`` from ``stream``: the run's ``seq`` for a run's stream (``per_run``), else the
    stream entry id. ``after`` is the last id already seen. A blocking read of the stream serves both the
    history and what comes next, so there is no hand-over from replay to live where events could be lost.
    """
    cursor: bytes | str = "0-0"
    skip_through = 0
    if after is not None and per_run:
        skip_through = int(after) if after.isdigit() else 0
    elif after is not None:
        cursor = after
    quiet_since = time.monotonic()
    while True:
        replies = read_streams(client, {stream: cursor}, count=200, block=500)
        if not replies and timeout is not None and time.monotonic() - quiet_since > timeout:
            return
        for _, entries in replies:
            for entry_id, fields in entries:
                cursor = entry_id
                event = Event.from_json(fields[b"event"])
                if event.seq <= skip_through:
                    continue
                quiet_since = time.monotonic()
                yield (str(event.seq) if per_run else entry_id.decode()), event
                if until_done and per_run and event.status in TERMINAL and _is_last(client, stream, entry_id):
                    return


def _is_last(client: redis.Redis, stream: str, entry_id: bytes) -> bool:
    """No event follows ``entry_id``: a run that ended and was resumed goes on after its first end."""
    return not range_stream(client, stream, start=f"({entry_id.decode()}", count=1)
