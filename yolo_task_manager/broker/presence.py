"""Which workers are alive: one sorted set of queue -> last heartbeat time, read without SCAN.

Each worker's presence thread beats every ``tick_interval``; the dispatcher reads the members that beat
recently and prunes those long silent. Times are Unix seconds of the writer's clock: hosts keep their clocks
within a few seconds of each other (NTP), well under the ages compared here (several ticks, a lease TTL).
"""

from __future__ import annotations

import time

import redis

from yolo_task_manager.broker.keys import Keys

__all__ = ["WorkerPresence"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WorkerPresence:
    """The live-worker set of one deployment (``Keys.workers``)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def beat(self, queue: str, now: float | None = None) -> None:
        """Say that the worker of ``queue`` is alive now."""
        now = time.time() if now is None else now
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {queue: now})
        pipe.hset(self.keys.worker_seen, queue, now)
        pipe.execute()

    def leave(self, queue: str) -> None:
        self.client.zrem(self.keys.workers, queue)

    def is_live(self, queue: str, max_age: float, now: float | None = None) -> bool:
        last = self.last_beat(queue)
        return last is not None and (time.time() if now is None else now) - last <= max_age

    def last_beat(self, queue: str) -> float | None:
        """When the worker of ``queue`` last beat, if it is still in the set."""
        score = self.client.zscore(self.keys.workers, queue)
        return None if score is None else float(score)

    def live(self, max_age: float, now: float | None = None, *, prune_after: float | None = None) -> list[str]:
        """Queues whose worker beat within ``max_age`` seconds, sorted; first forget those silent for
        ``prune_after`` seconds (``worker_seen`` still says when they left). One round trip."""
        now = time.time() if now is None else now
        pipe = self.client.pipeline(transaction=False)
        if prune_after is not None:
            pipe.zremrangebyscore(self.keys.workers, "-inf", f"({now - prune_after}")
        pipe.zrangebyscore(self.keys.workers, now - max_age, "+inf")
        members: list[bytes | str] = pipe.execute()[-1]
        return sorted(_text(q) for q in members)

    def last_seen(self) -> dict[str, float]:
        """Queue -> when its worker was last present, for every queue ever served."""
        return {_text(k): float(v) for k, v in self.client.hgetall(self.keys.worker_seen).items()}
