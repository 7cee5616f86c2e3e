"""Reading events as a feed: history, then live, with resume tokens for SSE, across Redis restarts."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from yolo_task_manager.broker.events import read_streams, stream_tip
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.errors import BrokerUnavailable, InvalidInput
from yolo_task_manager.redact import redact, shown
from yolo_task_manager.registry import EventLog
from yolo_task_manager.values import TERMINAL, Event

__all__ = ["FeedSource", "check_after", "check_timeout", "read_feed", "read_feed_with_ticks"]

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


@dataclass(frozen=True)
class FeedSource:
    """Where a feed reads: Redis for what is new, the registry's event log for everything (the durable record).

    Args:
        patience: seconds of reconnecting to a Redis that is away before the feed raises ``BrokerUnavailable``.
    """

    client: redis.Redis
    keys: Keys
    log: EventLog
    patience: float


def read_feed(
    source: FeedSource,
    *,
    user_id: str,
    run_id: str | None = None,
    after: str | int | None = None,
    until_done: bool = True,
    timeout: float | None = None,
) -> Iterator[tuple[str, Event]]:
    """``(event_id, event)`` of one run (``run_id``; its ``seq`` is the id) or of all the user's runs (the id is
    the user stream's entry id). ``after`` is the last id already seen.

    A run's feed reads the registry first, then follows the run's Redis stream from its newest entry, and goes
    back to the registry whenever it sees a gap in the seqs, stays quiet, or Redis fails; so it delivers every
    event once, in order, also across a Redis that restarted empty.

    Raises:
        InvalidInput: at the call, not at the first event, for an ``after`` or ``timeout`` it cannot use.
        BrokerUnavailable: while iterating, once Redis stayed away for ``source.patience`` seconds.
    """
    feed = read_feed_with_ticks(source, user_id=user_id, run_id=run_id, after=after, until_done=until_done,
                                timeout=timeout, tick=None)  # fmt: skip
    return cast(Iterator[tuple[str, Event]], feed)


def read_feed_with_ticks(
    source: FeedSource,
    *,
    user_id: str,
    run_id: str | None = None,
    after: str | int | None = None,
    until_done: bool = True,
    timeout: float | None = None,
    tick: float | None = None,
) -> Iterator[tuple[str, Event] | None]:
    """``read_feed``, and None after each ``tick`` seconds without an event: a server writes a keep-alive then,
    which is also how it learns that a client left, and frees what served it."""
    resume = check_after(after, per_run=run_id is not None)
    timeout = check_timeout(timeout)
    if run_id is not None:
        return _run_feed(source, run_id, cast(int, resume or 0), until_done, timeout, tick)
    return _user_feed(source, user_id, cast(str, resume or "0-0"), timeout, tick)


_BLOCK_S = 0.5
"""How long one XREAD waits: the longest a feed takes to notice a quiet period or a tick is due."""
_RECHECK_S = 5.0
"""A quiet run's feed asks the registry this often: an event stored by a process that then lost Redis (or died)
never reaches the stream."""
_FILL_LIMIT = 1000


class _Clock:
    """Quiet periods, ticks and the Redis outage of one feed."""

    def __init__(self, timeout: float | None, tick: float | None, patience: float) -> None:
        self.timeout, self.tick, self.patience = timeout, tick, patience
        self.event_at = self.tick_at = time.monotonic()
        self.down_since: float | None = None
        self.delay = 0.0

    def delivered(self) -> None:
        self.event_at = self.tick_at = time.monotonic()

    def tick_due(self) -> bool:
        if self.tick is None or time.monotonic() - self.tick_at < self.tick:
            return False
        self.tick_at = time.monotonic()
        return True

    def quiet_too_long(self) -> bool:
        return self.timeout is not None and time.monotonic() - self.event_at > self.timeout

    def redis_ok(self) -> None:
        self.down_since, self.delay = None, 0.0

    def redis_failed(self, exc: Exception) -> None:
        """Wait before the next try (0.1 s, doubling to 2 s); raise once Redis was away for ``patience``."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        elif now - self.down_since > self.patience:
            raise BrokerUnavailable(
                f"Redis has been unreachable for {self.patience:g}s ({redact(str(exc))}): the events so far were "
                "delivered; subscribe again with the last event_id once Redis is back (YTM_REDIS_PATIENCE waits longer)"
            ) from None
        self.delay = min(max(self.delay * 2, 0.1), 2.0)
        time.sleep(self.delay)


_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _run_feed(
    source: FeedSource, run_id: str, last: int, until_done: bool, timeout: float | None, tick: float | None
) -> Iterator[tuple[str, Event] | None]:
    stream = source.keys.run_stream(run_id)
    clock = _Clock(timeout, tick, source.patience)
    cursor: bytes | None = None  # None: (re)connect, after catching up from the registry
    checked_at = -math.inf
    while True:
        if cursor is None or time.monotonic() - checked_at >= _RECHECK_S:
            checked_at = time.monotonic()
            while batch := source.log.read(run_id, after_seq=last, limit=_FILL_LIMIT):
                for event in batch:
                    last = event.seq
                    clock.delivered()
                    yield str(event.seq), event
            if until_done and _ended(source, run_id, last):
                return
        try:
            if cursor is None:
                tip = stream_tip(source.client, stream)
                if tip is not None and tip[1] > last:
                    continue  # pushed while we read the registry: read it again
                cursor = tip[0] if tip is not None else b"0-0"
            replies = read_streams(source.client, {stream: cursor}, count=200, block=int(_BLOCK_S * 1000))
            clock.redis_ok()
        except _REDIS_DOWN as exc:
            cursor = None
            clock.redis_failed(exc)
            if clock.tick_due():
                yield None
            continue
        for _, entries in replies:
            for entry_id, fields in entries:
                cursor = entry_id
                event = Event.from_json(fields[b"event"])
                if event.seq <= last:
                    continue
                if event.seq > last + 1:  # pushed out of order, or lost by Redis: the registry has them
                    for missed in source.log.read(run_id, after_seq=last, limit=event.seq - last - 1):
                        last = missed.seq
                        yield str(missed.seq), missed
                last = event.seq
                clock.delivered()
                yield str(event.seq), event
                if until_done and event.status in TERMINAL and _ended(source, run_id, last):
                    return
        if not replies:
            if clock.quiet_too_long():
                return
            if clock.tick_due():
                yield None


def _ended(source: FeedSource, run_id: str, last: int) -> bool:
    """The reader has the run's newest event and it is an end (a run that was resumed goes on after an end)."""
    newest = source.log.newest(run_id)
    return newest is not None and newest.seq <= last and newest.status in TERMINAL


def _user_feed(
    source: FeedSource, user_id: str, cursor: str, timeout: float | None, tick: float | None
) -> Iterator[tuple[str, Event] | None]:
    """A user's stream across all their runs. Entry ids are Redis's own, so what Redis lost before this feed
    started cannot be named; once a run's event was seen here, a later gap in its seqs is filled from the
    registry (the filled events carry the id of the entry before them)."""
    stream = source.keys.user_stream(user_id)
    clock = _Clock(timeout, tick, source.patience)
    last: dict[str, int] = {}
    while True:
        try:
            replies = read_streams(source.client, {stream: cursor}, count=200, block=int(_BLOCK_S * 1000))
            clock.redis_ok()
        except _REDIS_DOWN as exc:
            clock.redis_failed(exc)
            if clock.tick_due():
                yield None
            continue
        for _, entries in replies:
            for entry_id, fields in entries:
                event = Event.from_json(fields[b"event"])
                seen = last.get(event.run_id)
                if seen is not None and event.seq <= seen:
                    cursor = entry_id.decode()
                    continue
                if seen is not None and event.seq > seen + 1:
                    for missed in source.log.read(event.run_id, after_seq=seen, limit=event.seq - seen - 1):
                        yield cursor, missed
                cursor = entry_id.decode()
                last[event.run_id] = event.seq
                clock.delivered()
                yield cursor, event
        if not replies:
            if clock.quiet_too_long():
                return
            if clock.tick_due():
                yield None
