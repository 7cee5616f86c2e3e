"""Delivers a run's events to the caller's callbacks, in order and once, from the Redis stream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from yolo_task_manager.broker.events import read_streams
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.values import TERMINAL, Event, EventType

__all__ = ["CALLBACK_NAMES", "Subscriber"]

log = logging.getLogger(__name__)

CALLBACK_NAMES = frozenset({"on_metrics", "on_status", "on_event"})
"""on_metrics(run_id, epoch, metrics); on_status(run_id, status, reason); on_event(event)."""


class Subscriber(threading.Thread):
    """One thread per manager reading the streams of the runs that have callbacks.

    Reading the stream (not pub/sub) from the last id seen means a Redis restart or a slow callback
    loses nothing and repeats nothing.
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        super().__init__(name="ytm-subscriber", daemon=True)
        self.client = client
        self.keys = keys
        self._lock = threading.Lock()
        self._followed: dict[str, Mapping[str, Callable[..., Any]]] = {}
        self._callbacks: dict[str, Mapping[str, Callable[..., Any]]] = {}
        self._last_id: dict[str, bytes | str] = {}
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
            self._last_id.setdefault(run_id, "0-0")
        self._wake.set()

    def close(self) -> None:
        """Stop and wait for the thread, so the Redis client can be closed after."""
        self._stopped.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                streams = {self.keys.run_stream(r): self._last_id[r] for r in self._followed}
            if not streams:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                replies = read_streams(self.client, streams, count=100, block=500)
            except redis.exceptions.RedisError as exc:
                if self._stopped.is_set():
                    return
                log.warning("reading events failed (%s); retrying from the last event seen", exc)
                time.sleep(0.5)
                continue
            for stream, entries in replies:
                run_id = stream.decode().split(":")[-2]
                for entry_id, fields in entries:
                    if run_id not in self._followed:
                        break  # unfollowed at a terminal event: the rest waits for the next follow()
                    self._last_id[run_id] = entry_id
                    try:
                        event = Event.from_json(fields[b"event"])
                    except (KeyError, TypeError, ValueError):
                        log.exception("run %s: skipping an unreadable event %s", run_id, entry_id)
                        continue
                    self._deliver(run_id, event)

    def _deliver(self, run_id: str, event: Event) -> None:
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
