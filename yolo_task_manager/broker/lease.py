"""A run's lease in Redis: held by the one worker that trains the run; its expiry means that worker is gone.

Acquired when an attempt starts, renewed by the worker's heartbeat, released when the attempt ends. The
dispatcher (``scheduling.recovery``) only looks at whether it exists (``lease_held``).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import redis
from redis.lock import Lock

from yolo_task_manager.broker.keys import Keys

__all__ = ["Lease", "lease_held"]


def lease_held(client: redis.Redis, keys: Keys, run_id: str) -> bool:
    """Whether some worker holds ``run_id``'s lease."""
    return bool(client.exists(keys.lease(run_id)))


class Lease:
    """One attempt's hold on its run.

    Args:
        ttl: seconds the lease lives without a renewal.
        clock: monotonic seconds; tests pass their own.
    """

    def __init__(
        self, client: redis.Redis, keys: Keys, run_id: str, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.run_id = run_id
        self.ttl = ttl
        self._lock: Lock = client.lock(keys.lease(run_id), timeout=ttl, thread_local=False)
        self._token = uuid.uuid4().hex
        self._clock = clock
        self._renewed_at = clock()

    def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        if self._lock.acquire(blocking=False, token=self._token):
            self._renewed_at = self._clock()
            return True
        return False

    def release(self) -> None:
        with contextlib.suppress(redis.exceptions.LockError):
            self._lock.release()

    def heartbeat(self, still_ours: Callable[[], bool]) -> str | None:
        """Renew the lease; return why this worker lost the run, or None while it still holds it.

        Redis being away is survived for twice the lease's life (a restart); past that, other workers may have
        requeued the run, and two attempts must never train at once. A lease that expired meanwhile is taken
        back only if ``still_ours()`` (the registry still has this attempt running).
        """
        try:
            self._lock.reacquire()
            self._renewed_at = self._clock()
            return None
        except redis.exceptions.LockNotOwnedError:
            pass
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            silent = self._clock() - self._renewed_at
            return f"lost contact with Redis for {silent:.0f}s" if silent > 2 * self.ttl else None
        if still_ours() and self.acquire():
            return None
        return "lease lost: another attempt owns this run"

    @contextlib.contextmanager
    def kept(self, interval: float) -> Iterator[None]:
        """Renew the lease from a thread while the worker prepares (a big dataset takes a while to check)."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(interval):
                with contextlib.suppress(redis.exceptions.RedisError):
                    self._lock.reacquire()
                    self._renewed_at = self._clock()

        thread = threading.Thread(target=renew, name="ytm-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
