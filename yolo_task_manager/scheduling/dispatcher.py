"""The dispatcher: under a Redis lock, recovers lost runs, then applies ``plan_dispatch`` to the first users
of the ring.

One decision costs a few queries per free slot and per user looked at, never one per run: the ring (a table
of users with waiting runs, ``registry.ring``) gives the users in turn order, and each user's oldest runs for
the free devices come from one indexed query with LIMIT.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import redis

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.devices import device_matches
from yolo_task_manager.errors import InvalidTransition
from yolo_task_manager.registry import Registry
from yolo_task_manager.scheduling.policy import plan_dispatch, requests_served_by
from yolo_task_manager.scheduling.recovery import Recovery, redis_uptime
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Run, RunStatus

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

S = RunStatus
_PAGE = 64
"""Users read from the ring at a time."""
_EXPLAIN_EVERY = 60.0
"""Seconds between rewrites of "no live worker serves device ..." reasons (their text changes by the minute),
unless the set of live queues changes."""
_EXPLAIN_BATCH = 500
"""Reasons rewritten per device and pass at most; the next pass, a tick later, goes on."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Dispatcher:
    """Sends waiting runs to free live queues, and recovers runs whose worker or message was lost.

    Args:
        send: enqueues one attempt of a run on a queue.
        transition: the one path of a state change (``context.Context.transition``).
        clock: monotonic seconds, ``now``: aware UTC time, ``uptime``: seconds Redis has been up; tests pass
            their own.
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
        uptime: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.keys = Keys(settings.key_prefix)
        self.registry = registry
        self.presence = WorkerPresence(client, self.keys)
        self.recovery = Recovery(
            settings, client, registry, transition, now=now, uptime=uptime or (lambda: redis_uptime(client))
        )
        self._send = send
        self._transition = transition
        self._clock = clock
        self._now = now
        self._explained: tuple[str, ...] | None = None  # the live queues when reasons were last rewritten
        self._explained_complete = False  # whether that pass rewrote every stale reason
        self._explained_at = -math.inf

    def live_queues(self, *, prune: bool = False) -> list[str]:
        """Queues whose worker beat within three ticks (and within a lease TTL: silent that long, it is gone);
        ``prune`` first forgets workers silent for a lease TTL and three ticks more."""
        max_age = min(3 * self.settings.tick_interval, self.settings.lease_ttl)
        prune_after = self.settings.lease_ttl + 3 * self.settings.tick_interval if prune else None
        return self.presence.live(max_age, now=self._now().timestamp(), prune_after=prune_after)

    def requeue(self, run_id: str) -> None:
        """Send an interrupted run back to the queue (or end it: see ``Recovery.requeue``)."""
        self.recovery.requeue(run_id)

    def tick(self) -> list[tuple[Run, str]]:
        """Recover lost runs, then dispatch; a no-op when another process holds the lock."""
        lock = self.client.lock(self.keys.dispatch_lock, timeout=30)
        if not lock.acquire(blocking=False):
            return []  # another process is dispatching; the next tick will see what it left
        try:
            live = self.live_queues(prune=True)
            started = self.registry.list_runs(statuses=[S.DISPATCHED, S.RUNNING, S.INTERRUPTED])
            if self.recovery.recover(started):
                started = self.registry.list_runs(statuses=[S.DISPATCHED, S.RUNNING])
            self._explain_unserved(live)
            return self._dispatch(live, [r for r in started if r.status in (S.DISPATCHED, S.RUNNING)])
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("dispatch lock expired while dispatching")

    def _dispatch(self, live: Sequence[str], active: Sequence[Run]) -> list[tuple[Run, str]]:
        busy = {r.queue for r in active}
        free = [q for q in live if q not in busy]
        limit = self.settings.global_limit
        slots = len(free) if limit is None else min(len(free), limit - len(active))
        if slots <= 0:
            return []
        pending, turns = self._candidates(free, slots, Counter(r.user_id for r in active))
        plan = plan_dispatch(
            pending=pending,
            active=active,
            free_queues=free,
            last_turn=turns,
            global_limit=limit,
            per_user_limit=self.settings.per_user_limit,
        )
        sent = []
        for run, queue in plan:
            try:
                claimed = self._transition(run.run_id, S.DISPATCHED, attempt=run.attempt, queue=queue)
            except InvalidTransition:
                continue  # stopped or claimed meanwhile
            self._send(claimed, queue, claimed.attempt)
            sent.append((claimed, queue))
        return sent

    def _candidates(self, free: Sequence[str], slots: int, per_user: Counter[str]) -> tuple[list[Run], dict[str, int]]:
        """The waiting runs ``plan_dispatch`` needs to decide as if it saw them all.

        Users are read in ring order until every free queue has ``slots`` users with a run it may take (or the
        ring ends): a tick serves at most ``slots`` users, so no later user could get a turn. Each user gives
        their oldest ``slots`` runs for the free devices.
        """
        served = {q: requests_served_by(q) for q in free}
        devices = sorted(set().union(*served.values()))
        need = dict.fromkeys(free, slots)
        cap = self.settings.per_user_limit
        pending: list[Run] = []
        turns: dict[str, int] = {}
        offset = 0
        while any(need.values()):
            users = self.registry.waiting_users(_PAGE, offset)
            offset += len(users)
            for user_id, turn in users:
                if cap is not None and per_user[user_id] >= cap:
                    continue
                runs = self.registry.waiting_runs(user_id, devices, slots)
                if not runs:
                    continue
                pending.extend(runs)
                turns[user_id] = turn
                for queue in free:
                    if need[queue] and any(r.device in served[queue] for r in runs):
                        need[queue] -= 1
                if not any(need.values()):
                    break
            if len(users) < _PAGE:
                break
        return pending, turns

    def _explain_unserved(self, live: Sequence[str]) -> None:
        """Say in the reason of each waiting run that no live worker serves its device, and since when."""
        # Due when the live workers changed, a minute after a complete pass, a tick after a partial one: a
        # producer calling train() many times a second pays for one batch per tick at most.
        every = _EXPLAIN_EVERY if self._explained_complete else self.settings.tick_interval
        if tuple(live) == self._explained and self._clock() - self._explained_at < every:
            return
        unserved = [d for d in self.registry.waiting_devices() if not any(device_matches(d, q) for q in live)]
        seen = self.presence.last_seen() if unserved else {}
        now = self._now().timestamp()
        complete = True
        for device in unserved:
            last = max((t for q, t in seen.items() if device_matches(device, q)), default=None)
            when = "none has been seen" if last is None else f"the last one was seen {_ago(now - last)} ago"
            reason = f"waiting: no live worker serves device {device!r} ({when}); start `ytm worker --device ...`"
            if self.registry.explain_waiting(device, reason, limit=_EXPLAIN_BATCH) >= _EXPLAIN_BATCH:
                complete = False
        self._explained, self._explained_complete, self._explained_at = tuple(live), complete, self._clock()


def _ago(seconds: float) -> str:
    """Coarse on purpose: the reason is rewritten only when this text changes."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"
