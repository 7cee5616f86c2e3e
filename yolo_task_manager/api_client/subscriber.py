"""Delivers a run's events to the caller's callbacks, in order and once, from the registry and Redis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from yolo_task_manager.api_client.feed import FeedSource
from yolo_task_manager.broker.events import read_streams, stream_tip
from yolo_task_manager.errors import YoloTaskManagerError
from yolo_task_manager.values import TERMINAL, Event, EventType

__all__ = ["CALLBACK_NAMES", "Subscriber"]

log = logging.getLogger(__name__)

CALLBACK_NAMES = frozenset({"on_metrics", "on_status", "on_event"})
"""on_metrics(run_id, epoch, metrics); on_status(run_id, status, reason); on_event(event)."""


_RECHECK_S = 5.0
"""How often a followed run is caught up from the registry even when its stream is quiet: an event stored by
a process that then lost Redis (or died) never reaches the stream."""


class Subscriber(threading.Thread):
    """One thread per manager delivering the events of the runs that have callbacks.

    It goes by each run's ``seq``: the registry's event log first, then the run's Redis stream, and back to
    the registry at a gap, when quiet, and after Redis failed. So a Redis restart (with its data or without)
    or a slow callback loses nothing and repeats nothing; a Redis that is away is retried, for as long as it
    takes.
    """

    def __init__(self, source: FeedSource) -> None:
        super().__init__(name="ytm-subscriber", daemon=True)
        self.source = source
        self._lock = threading.Lock()
        self._followed: dict[str, Mapping[str, Callable[..., Any]]] = {}
        self._callbacks: dict[str, Mapping[str, Callable[..., Any]]] = {}
        self._last_seq: dict[str, int] = {}
        self._cursor: dict[str, bytes | None] = {}  # None: catch up from the registry, then read from the tip
        self._checked_at = 0.0
        self._stopped = threading.Event()
        self._wake = threading.Event()

    def follow(self, run_id: str, callbacks: Mapping[str, Callable[..., Any]] | None = None) -> None:
        """Deliver the run's events from where this subscriber left off (or the start) to ``callbacks``."""
        with self._lock:
            callbacks = callbacks or self._callbacks.get(run_id)
            if not callbacks:
                return
            self._callbacks[run_id] = callbacks
            self._followed[run_id] = callbacks
            self._last_seq.setdefault(run_id, 0)
            self._cursor[run_id] = None
        self._wake.set()

    def close(self) -> None:
        """Stop and wait for the thread, so the Redis client can be closed after."""
        self._stopped.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        delay = 0.0
        while not self._stopped.is_set():
            with self._lock:
                followed = list(self._followed)
            if not followed:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._catch_up(followed)
                replies = read_streams(self.source.client, self._streams(followed), count=100, block=500)
                delay = 0.0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if self._stopped.is_set():
                    return
                with self._lock:
                    self._cursor = dict.fromkeys(self._cursor)
                delay = min(max(delay * 2, 0.1), 2.0)
                log.warning("reading events failed (%s); retrying in %.1fs from the last event seen", exc, delay)
                self._stopped.wait(delay)
                continue
            except YoloTaskManagerError as exc:  # the registry is away: the same wait, then again
                log.warning("reading events from the registry failed (%s); retrying", exc)
                self._stopped.wait(1.0)
                continue
            for stream, entries in replies:
                run_id = stream.decode().split(":")[-2]
                for entry_id, fields in entries:
                    if run_id not in self._followed:
                        break  # unfollowed at a terminal event: the rest waits for the next follow()
                    self._cursor[run_id] = entry_id
                    try:
                        event = Event.from_json(fields[b"event"])
                    except (KeyError, TypeError, ValueError):
                        log.exception("run %s: skipping an unreadable event %s", run_id, entry_id)
                        continue
                    if event.seq > self._last_seq[run_id] + 1:  # out of order, or lost by Redis
                        self._deliver_from_log(run_id, before=event.seq)
                    if event.seq == self._last_seq[run_id] + 1:
                        self._deliver(run_id, event)

    def _catch_up(self, followed: list[str]) -> None:
        """Deliver from the registry what a run's stream may not show: at a (re)start, and every few seconds."""
        recheck = time.monotonic() - self._checked_at >= _RECHECK_S
        if recheck:
            self._checked_at = time.monotonic()
        for run_id in followed:
            if recheck or self._cursor.get(run_id) is None:
                self._deliver_from_log(run_id)

    def _streams(self, followed: list[str]) -> dict[str, bytes | str]:
        """The stream cursor of each followed run; a run caught up from the registry reads on from the tip."""
        streams: dict[str, bytes | str] = {}
        for run_id in followed:
            stream = self.source.keys.run_stream(run_id)
            if self._cursor.get(run_id) is None:
                tip = stream_tip(self.source.client, stream)
                if tip is not None and tip[1] > self._last_seq[run_id]:
                    self._deliver_from_log(run_id)  # pushed while we read the registry
                self._cursor[run_id] = tip[0] if tip is not None else b"0-0"
            streams[stream] = self._cursor[run_id] or b"0-0"
        return streams

    def _deliver_from_log(self, run_id: str, before: int | None = None) -> None:
        """The run's events after the last one delivered (and before ``before``), from the registry."""
        while run_id in self._followed:
            last = self._last_seq[run_id]
            limit = 500 if before is None else min(500, before - last - 1)
            batch = self.source.log.read(run_id, after_seq=last, limit=limit) if limit > 0 else []
            for event in batch:
                if run_id not in self._followed:
                    return
                self._deliver(run_id, event)
            if len(batch) < 500:
                return

    def _deliver(self, run_id: str, event: Event) -> None:
        self._last_seq[run_id] = event.seq
        callbacks = self._followed.get(run_id, {})
        if event.type is EventType.STATUS and event.status in TERMINAL:
            # Before the callbacks, so that one calling resume() (and so follow()) keeps the run followed.
            with self._lock:
                self._followed.pop(run_id, None)
        try:
            if event.type is EventType.METRICS and "on_metrics" in callbacks:
                callbacks["on_metrics"](run_id, event.epoch, event.metrics)
            elif event.type is EventType.STATUS and "on_status" in callbacks:
                callbacks["on_status"](run_id, event.status, event.reason)
            if "on_event" in callbacks:
                callbacks["on_event"](event)
        except Exception:  # noqa: BLE001 - a failing callback must not stop the others
            log.exception("callback for run %s raised on event %s", run_id, event.seq)
