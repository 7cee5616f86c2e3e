"""Reading a Redis event stream as a feed: history, then live, with resume tokens for SSE."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator

import redis

from yolo_task_manager.broker.events import range_stream, read_streams
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.redact import shown
from yolo_task_manager.values import TERMINAL, Event

__all__ = ["check_after", "check_timeout", "read_feed"]

_MAX_ID_PART = 2**64 - 1  # a Redis stream id is two unsigned 64-bit numbers; a run's seq is INCR's int64
_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_SEQ = re.compile(r"[0-9]{1,19}")


def check_after(after: object, *, per_run: bool) -> int | str | None:
    """The resume point ``after`` stands for: a run's ``seq`` (digits), or a user stream's entry id
    (``1718000000000-0``); None (or "", what a browser sends for no id) starts at the beginning.

    Raises:
        InvalidInput: anything that is not an id this feed gave out.
    """
    if after is None or after == "":
        return None
    if per_run:
        if isinstance(after, int) and not isinstance(after, bool) and 0 <= after < 2**63:
            return after
        if isinstance(after, str) and _SEQ.fullmatch(after) and int(after) < 2**63:
            return int(after)
        raise InvalidInput(
            f"after={shown(after)} is not an event id of this run's feed: pass the last event_id you received "
            "(a number, as in SSE's Last-Event-ID), or None for the whole history"
        )
    m = _STREAM_ID.fullmatch(after) if isinstance(after, str) else None
    if m is None or any(int(part) > _MAX_ID_PART for part in m.groups() if part is not None):
        raise InvalidInput(
            f"after={shown(after)} is not an event id of this user's feed: pass the last event_id you received "
            "(like '1718000000000-0'), or None for the whole history"
        )
    return m.group(0)


def check_timeout(timeout: object) -> float | None:
    """A quiet period in seconds (None: wait forever)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < 10**9:
        raise InvalidInput(f"timeout must be None or a number of seconds from 0 to 1e9, got {shown(timeout)}")
    if math.isnan(timeout):
        raise InvalidInput("timeout must be a number of seconds, got nan")
    return float(timeout)


def read_feed(
    client: redis.Redis,
    stream: str,
    *,
    per_run: bool,
    after: str | int | None = None,
    until_done: bool = True,
    timeout: float | None = None,
) -> Iterator[tuple[str, Event]]:
    """``(event_id, event)`` from ``stream``: the run's ``seq`` for a run's stream (``per_run``), else the
    stream entry id. ``after`` is the last id already seen. A blocking read of the stream serves both the
    history and what comes next, so there is no hand-over from replay to live where events could be lost.

    Raises:
        InvalidInput: at the call, not at the first event, for an ``after`` or ``timeout`` it cannot use.
    """
    resume = check_after(after, per_run=per_run)
    return _feed(client, stream, per_run, resume, until_done, check_timeout(timeout))


def _feed(
    client: redis.Redis, stream: str, per_run: bool, resume: int | str | None, until_done: bool, timeout: float | None
) -> Iterator[tuple[str, Event]]:
    cursor: bytes | str = "0-0"
    skip_through = 0
    if isinstance(resume, int):
        skip_through = resume
    elif resume is not None:
        cursor = resume
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
