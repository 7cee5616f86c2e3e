"""Admission and dispatch: limits, round robin across users, one run per device, and recovery.

Runs wait in the registry, not in Celery queues, so that the order is fair; a run is sent to a
device's queue only when that device is free, so a Celery queue never holds more than one run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone

import redis

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.lease import lease_held
from yolo_task_manager.broker.stops import StopRequests
from yolo_task_manager.devices import device_matches, gpu_first
from yolo_task_manager.errors import InvalidTransition
from yolo_task_manager.registry import Registry
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Run, RunStatus

__all__ = ["Dispatcher", "plan_dispatch"]

log = logging.getLogger(__name__)


def plan_dispatch(
    *,
    pending: Sequence[Run],
    active: Sequence[Run],
    free_queues: Sequence[str],
    last_turn: Mapping[str, int],
    global_limit: int | None,
    per_user_limit: int | None,
) -> list[tuple[Run, str]]:
    """Pair waiting runs with free queues.

    Args:
        pending: waiting runs, oldest first.
        active: runs dispatched or running; they count against the limits.
        free_queues: queues with a live, idle worker.
        last_turn: for each user, the turn of their last dispatch; the user served longest ago goes first.
    """
    per_user = Counter(r.user_id for r in active)
    total = len(active)
    waiting: dict[str, list[Run]] = defaultdict(list)
    for run in pending:
        waiting[run.user_id].append(run)
    free = gpu_first(free_queues)
    turns = dict(last_turn)
    turn = max(turns.values(), default=0)
    plan: list[tuple[Run, str]] = []
    while free and (global_limit is None or total < global_limit):
        users = [u for u, runs in waiting.items() if runs and (per_user_limit is None or per_user[u] < per_user_limit)]
        users.sort(key=lambda u: (turns.get(u, 0), waiting[u][0].created_at))
        choice = next(
            ((run, q) for u in users for run in waiting[u] for q in free if device_matches(run.device, q)), None
        )
        if choice is None:
            break
        run, queue = choice
        plan.append(choice)
        free.remove(queue)
        waiting[run.user_id].remove(run)
        per_user[run.user_id] += 1
        total += 1
        turn += 1
        turns[run.user_id] = turn
    return plan


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Dispatcher:
    """Applies ``plan_dispatch`` under a Redis lock, and requeues runs whose worker vanished.

    Args:
        send: enqueues one attempt of a run on a queue.
        transition: the one path of a state change (``context.Context.transition``).
        clock: monotonic seconds, and ``now``: aware UTC time; tests pass their own.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        registry: Registry,
        send: Callable[[Run, str, int], None],
        transition: Callable[..., Run],
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.client = client
        self.keys = Keys(settings.key_prefix)
        self.registry = registry
        self.stops = StopRequests(client, self.keys)
        self._send = send
        self._transition = transition
        self._clock = clock
        self._now = now
        self._missing: dict[str, tuple[float, float]] = {}  # key -> (first, last) time we saw it missing

    def live_queues(self) -> list[str]:
        prefix = self.keys.worker("")
        names = (
            k.decode() if isinstance(k, bytes) else k for k in self.client.scan_iter(match=self.keys.worker_pattern)
        )
        return sorted(name[len(prefix) :] for name in names)

    def tick(self) -> list[tuple[Run, str]]:
        """Recover lost runs, then dispatch; a no-op when another process holds the lock."""
        lock = self.client.lock(self.keys.dispatch_lock, timeout=30)
        if not lock.acquire(blocking=False):
            return []  # another process is dispatching; the next tick will see what it left
        try:
            live = self.live_queues()
            self._recover(live)
            return self._dispatch(live)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("dispatch lock expired while dispatching")

    def _recover(self, live: list[str]) -> None:
        now = self._now()
        runs = self.registry.list_runs(statuses=[RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.INTERRUPTED])
        watched = {self.keys.lease(r.run_id) for r in runs} | {self.keys.worker(r.queue) for r in runs if r.queue}
        self._missing = {k: v for k, v in self._missing.items() if k in watched}
        for run in runs:
            try:
                if run.status is RunStatus.INTERRUPTED:  # its requeue was cut short
                    self.requeue(run.run_id)
                elif run.status is RunStatus.RUNNING:
                    self._recover_running(run)
                elif run.queue is not None:
                    self._recover_dispatched(run, live, now)
            except InvalidTransition:
                pass  # it moved on while we looked: nothing to recover

    def _missing_for(self, key: str, present: bool) -> float:
        """For how long this dispatcher has seen ``key`` missing in a row (0 when present).

        Counting from our own sightings, not from the key's expiry, keeps a Redis restart from looking
        like a dead worker: the owner takes its lease back at its next heartbeat.
        """
        now = self._clock()
        first, last = self._missing.get(key, (now, now))
        if present or now - last > 3 * self.settings.tick_interval + self.settings.lease_ttl:
            first = now  # present, or not looked at for a while: start counting again
        if present:
            self._missing.pop(key, None)
            return 0.0
        self._missing[key] = (first, now)
        return now - first

    def _recover_running(self, run: Run) -> None:
        lease = self.keys.lease(run.run_id)
        if self._missing_for(lease, lease_held(self.client, self.keys, run.run_id)) < self.settings.lease_ttl:
            return
        reason = f"worker lost: no heartbeat from queue {run.queue} for {self.settings.lease_ttl:g}s"
        if run.attempt >= self.settings.max_attempts:
            reason += f"; giving up after {run.attempt} attempts"
            self._transition(run.run_id, RunStatus.FAILED, reason=reason, attempt=run.attempt)
            return
        log.warning("run %s: %s; requeueing", run.run_id, reason)
        self._transition(run.run_id, RunStatus.INTERRUPTED, reason=reason, attempt=run.attempt)
        self.requeue(run.run_id)

    def requeue(self, run_id: str) -> None:
        """Send an interrupted run back to the queue, or end it as stopped if its user asked for that."""
        if self.stops.is_requested(run_id):
            self._transition(run_id, RunStatus.STOPPED, reason="stopped by user (while the run was interrupted)")
        else:
            self._transition(run_id, RunStatus.QUEUED, reason="requeued to resume from last.pt")

    def _recover_dispatched(self, run: Run, live: list[str], now: datetime) -> None:
        waited = (now - (run.dispatched_at or now)).total_seconds()
        if self._missing_for(self.keys.worker(run.queue or ""), run.queue in live) >= self.settings.lease_ttl:
            reason = f"worker for queue {run.queue} is gone"
        elif waited > self.settings.dispatch_timeout:
            reason = f"not started {waited:.0f}s after dispatch to {run.queue}; the message is presumed lost"
        else:
            return
        if self.registry.undispatch(run.run_id, run.attempt, reason):
            log.warning("run %s: %s; dispatching again", run.run_id, reason)

    def _dispatch(self, live: list[str]) -> list[tuple[Run, str]]:
        queued_or_running = self.registry.list_runs(statuses=[RunStatus.QUEUED, RunStatus.RUNNING])
        active = [r for r in queued_or_running if r.status is RunStatus.RUNNING or r.queue is not None]
        pending = [r for r in queued_or_running if r.status is RunStatus.QUEUED and r.queue is None]
        if not pending:
            return []
        self._explain_unserved(pending, live)
        busy = {r.queue for r in active}
        turns = {_text(k): int(v) for k, v in self.client.hgetall(self.keys.fairness).items()}
        plan = plan_dispatch(
            pending=pending,
            active=active,
            free_queues=[q for q in live if q not in busy],
            last_turn=turns,
            global_limit=self.settings.global_limit,
            per_user_limit=self.settings.per_user_limit,
        )
        sent = []
        for run, queue in plan:
            attempt = self.registry.mark_dispatched(run.run_id, queue)
            if attempt is None:
                continue  # stopped or claimed meanwhile
            self.client.hset(self.keys.fairness, run.user_id, int(time.time() * 1000))
            self._send(run, queue, attempt)
            sent.append((run, queue))
        return sent

    def _explain_unserved(self, pending: Sequence[Run], live: Sequence[str]) -> None:
        """Say in the reason of each waiting run that no live worker serves its device, and since when."""
        unserved = {r.device for r in pending if not any(device_matches(r.device, q) for q in live)}
        if not unserved:
            return
        seen = {_text(k): float(v) for k, v in self.client.hgetall(self.keys.worker_seen).items()}
        now = self._now().timestamp()
        for device in unserved:
            last = max((t for q, t in seen.items() if device_matches(device, q)), default=None)
            when = "none has been seen" if last is None else f"the last one was seen {_ago(now - last)} ago"
            self.registry.explain_waiting(
                device, f"waiting: no live worker serves device {device!r} ({when}); start `ytm worker --device ...`"
            )


def _ago(seconds: float) -> str:
    """Coarse on purpose: the reason is rewritten only when this text changes."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"
