"""Stop requests: a flag in Redis that the run's worker polls, cleared when the run ends.

Cooperative, like procrastinate's abort: the producer sets the flag; the worker's supervisor sees it at its
next heartbeat and asks the training child to stop at the next batch; the dispatcher ends an interrupted
run as stopped instead of requeueing it.
"""

from __future__ import annotations

import redis

from yolo_task_manager.broker.keys import Keys

__all__ = ["StopRequests"]


class StopRequests:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    def request(self, run_id: str) -> None:
        self._client.set(self._keys.stop_flag(run_id), 1)

    def is_requested(self, run_id: str) -> bool:
        return bool(self._client.exists(self._keys.stop_flag(run_id)))

    def clear(self, run_id: str) -> None:
        """Forget the request: the run ended, whatever ended it."""
        self._client.delete(self._keys.stop_flag(run_id))
