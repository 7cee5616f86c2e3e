"""A run's lease in Redis: held by the one attempt that trains the run; its expiry means that worker is gone.

Acquired when an attempt starts, renewed by the worker's heartbeat, released when the attempt ends. The
dispatcher (``scheduling.recovery``) only looks at whether it exists (``lease_held``).

The lease is also a fencing token: the lease key holds this attempt's random token, and the run's fence key
holds the highest attempt that ever took the lease. ``holds`` checks both in one script, so a worker that
froze past its lease (a newer attempt has the run now) finds out before it promotes anything.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import redis

from yolo_task_manager.broker.keys import Keys

__all__ = ["Lease", "lease_held"]

_FENCE_LIFE_S = 7 * 24 * 3600
"""How long the fence outlives the last renewal: far past any requeue, yet no key lives for ever."""

# KEYS: lease, fence. ARGV: token, ttl in ms, attempt, fence life in s.
_ACQUIRE = """
local fence = tonumber(redis.call('get', KEYS[2]) or '0')
if fence > tonumber(ARGV[3]) then return 0 end
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('set', KEYS[2], ARGV[3], 'EX', ARGV[4])
return 1
"""
# KEYS: lease, fence. ARGV: token, ttl in ms, fence life in s.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('expire', KEYS[2], ARGV[3])
return 1
"""
# KEYS: lease, fence. ARGV: token, attempt. The lease's remaining life in ms, or 0 when it is not ours.
_HOLDS = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('get', KEYS[2]) ~= ARGV[2] then return 0 end
return math.max(redis.call('pttl', KEYS[1]), 1)
"""
# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lease_held(client: redis.Redis, keys: Keys, run_id: str) -> bool:
    """Whether some worker holds ``run_id``'s lease."""
    return bool(client.exists(keys.lease(run_id)))


class Lease:
    """One attempt's hold on its run.

    Args:
        ttl: seconds the lease lives without a renewal.
        attempt: the attempt this lease is for (the registry's attempt number); part of the fencing token.
        clock: monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        run_id: str,
        ttl: float,
        *,
        attempt: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.ttl = ttl
        self.attempt = attempt
        self._client = client
        self._keys = (keys.lease(run_id), keys.fence(run_id))
        self._token = f"{attempt}:{uuid.uuid4().hex}"
        self._clock = clock
        self.renewed_at = clock()
        """When the last successful renewal was sent: the lease lives at least ``ttl`` past it."""

    def _ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def acquire(self) -> bool:
        """Take the lease if nobody holds it and no newer attempt ever took it."""
        sent = self._clock()
        ok = self._client.eval(_ACQUIRE, 2, *self._keys, self._token, self._ms(), self.attempt, _FENCE_LIFE_S)
        if ok:
            self.renewed_at = sent
        return bool(ok)

    def release(self) -> None:
        """Give the lease up, if it is still ours (never another attempt's)."""
        self._client.eval(_RELEASE, 1, self._keys[0], self._token)

    def renew(self) -> bool:
        """Extend the lease if it is still ours; False if it expired or another attempt holds it."""
        sent = self._clock()  # before the call: the lease lives at least ttl past this
        ok = self._client.eval(_RENEW, 2, *self._keys, self._token, self._ms(), _FENCE_LIFE_S)
        if ok:
            self.renewed_at = sent
        return bool(ok)

    def holds(self) -> float:
        """Seconds this attempt's lease still lives, checked in Redis (lease token and fence attempt); 0 if
        it is not ours any more. Redis errors propagate: a check that did not happen is no check."""
        left = self._client.eval(_HOLDS, 2, *self._keys, self._token, str(self.attempt))
        return int(left) / 1000 if left else 0.0

    def heartbeat(self, still_ours: Callable[[], bool]) -> str | None:
        """Renew the lease; return why this worker lost the run, or None while it still holds it.

        Redis being away is survived only while the lease would still be alive (``ttl`` since the last
        renewal): past that, the dispatcher may have requeued the run, and two attempts must never train at
        once. A lease that expired meanwhile is taken back only if ``still_ours()`` (the registry still has
        this attempt running) and no newer attempt ever took it (the fence).
        """
        try:
            if self.renew():
                return None
            if still_ours() and self.acquire():
                return None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            silent = self._clock() - self.renewed_at
            if silent >= self.ttl:
                return f"lost contact with Redis for {silent:.0f}s, past the lease's life ({self.ttl:g}s)"
            return None
        return "lease lost: another attempt owns this run"

    @contextlib.contextmanager
    def kept(self, interval: float) -> Iterator[None]:
        """Renew the lease from a thread while the worker prepares (a big dataset takes a while to check)."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(interval):
                with contextlib.suppress(redis.exceptions.RedisError):
                    self.renew()

        thread = threading.Thread(target=renew, name="ytm-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
