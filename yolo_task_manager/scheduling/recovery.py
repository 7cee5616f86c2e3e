"""Recovery: runs whose worker or message was lost go back to the queue, within one lease TTL.

Only dispatched, running and interrupted runs are read: at most a few per device, whatever the backlog.

A missing lease is evidence that its worker is gone once Redis itself has been up for a lease TTL: a Redis
that restarted without its data has lost every lease, and their workers take them back at their next
heartbeat (``Lease.heartbeat``, well within a TTL). So recovery needs no sightings of its own, and requeues as
soon as the lease key has expired.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from datetime import datetime

import redis

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.lease import lease_held
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.broker.stops import StopRequests
from yolo_task_manager.errors import InvalidTransition
from yolo_task_manager.registry import Registry
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Run, RunStatus

__all__ = ["Recovery", "redis_uptime"]

log = logging.getLogger(__name__)

S = RunStatus


def redis_uptime(client: redis.Redis) -> float:
    """Seconds the Redis server has been up (``INFO server``); infinite where INFO is not available."""
    try:
        return float(client.info("server")["uptime_in_seconds"])
    except (redis.exceptions.ResponseError, KeyError, TypeError, ValueError):
        return math.inf


class Recovery:
    """Finds lost attempts and sends their runs back to the queue, or ends them when they must give up.

    Args:
        transition: the one path of a state change (``context.Context.transition``).
        now: aware UTC time. uptime: seconds Redis has been up (``redis_uptime``); tests pass their own.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        registry: Registry,
        transition: Callable[..., Run],
        *,
        now: Callable[[], datetime],
        uptime: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.client = client
        self.keys = Keys(settings.key_prefix)
        self.registry = registry
        self.presence = WorkerPresence(client, self.keys)
        self.stops = StopRequests(client, self.keys)
        self._transition = transition
        self._now = now
        self._uptime = uptime

    def recover(self, runs: Iterable[Run]) -> bool:
        """Look at each dispatched, running or interrupted run once; return whether any of them moved."""
        uptime: list[float] = []

        def trusted() -> bool:  # a missing key is evidence only once Redis has been up for a lease TTL
            if not uptime:
                uptime.append(self._uptime())
            return uptime[0] >= self.settings.lease_ttl

        moved = False
        for run in runs:
            try:
                if run.status is S.INTERRUPTED:  # its requeue was cut short
                    self.requeue(run.run_id)
                    moved = True
                elif run.status is S.RUNNING:
                    moved |= self._recover_running(run, trusted)
                elif run.status is S.DISPATCHED:
                    moved |= self._recover_dispatched(run, trusted)
            except InvalidTransition:
                moved = True  # it moved on while we looked: nothing to recover
        return moved

    def requeue(self, run_id: str) -> None:
        """Send an interrupted run back to the queue; end it stopped if its user asked, or failed when it has
        lost ``max_worker_losses`` workers."""
        run = self.registry.get_run(run_id)
        limit = self.settings.max_worker_losses
        if self.stops.is_requested(run_id):
            self._transition(run_id, S.STOPPED, reason="stopped by user (while the run was interrupted)")
        elif run.worker_losses >= limit:
            reason = f"gave up after {run.worker_losses} worker losses (max_worker_losses={limit}); last: {run.reason}"
            self._transition(run_id, S.FAILED, reason=reason, attempt=run.attempt)
        else:
            self._transition(run_id, S.QUEUED, reason=f"requeued to resume from last.pt ({run.reason})")

    def _recover_running(self, run: Run, trusted: Callable[[], bool]) -> bool:
        if lease_held(self.client, self.keys, run.run_id) or not trusted():
            return False
        now = self._now()
        if run.started_at is not None and (now - run.started_at).total_seconds() < self.settings.lease_ttl:
            return False  # its lease was taken before it started: missing this soon, it is being released
        reason = f"worker lost: its lease on queue {run.queue} expired (no heartbeat for {self.settings.lease_ttl:g}s)"
        log.warning("run %s: %s; requeueing", run.run_id, reason)
        self._transition(
            run.run_id, S.INTERRUPTED, reason=reason, attempt=run.attempt, worker_losses=run.worker_losses + 1
        )
        self.requeue(run.run_id)
        return True

    def _recover_dispatched(self, run: Run, trusted: Callable[[], bool]) -> bool:
        now = self._now()
        waited = (now - (run.dispatched_at or now)).total_seconds()
        last = self.presence.last_beat(run.queue or "")
        silent = last is None or now.timestamp() - last > self.settings.lease_ttl
        if silent and trusted():
            reason = f"worker for queue {run.queue} is gone"
        elif waited > self.settings.dispatch_timeout:
            reason = f"not started {waited:.0f}s after dispatch to {run.queue}; the message is presumed lost"
        else:
            return False
        self._transition(run.run_id, S.QUEUED, reason=reason, attempt=run.attempt)
        log.warning("run %s: %s; dispatching again", run.run_id, reason)
        return True
