"""The Redis key schema: every key and channel the package uses, under one prefix."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    """Names of Redis keys; ``prefix`` lets several deployments (or tests) share one Redis."""

    prefix: str = "ytm"

    def run_channel(self, run_id: str) -> str:
        """Pub/sub channel with every event of one run."""
        return f"{self.prefix}:run:{run_id}"

    def run_stream(self, run_id: str) -> str:
        """Stream with every event of one run, for replay."""
        return f"{self.prefix}:run:{run_id}:events"

    def run_pushed(self, run_id: str) -> str:
        """The last seq pushed to the run's stream: an older one arriving late is left to the registry."""
        return f"{self.prefix}:run:{run_id}:pushed"

    def user_channel(self, user_id: str) -> str:
        """Pub/sub channel with every event of all of one user's runs."""
        return f"{self.prefix}:user:{user_id}"

    def user_stream(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:events"

    def stop_flag(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:stop"

    def lease(self, run_id: str) -> str:
        """Held by the worker training the run; its expiry means the worker is gone."""
        return f"{self.prefix}:run:{run_id}:lease"

    @property
    def workers(self) -> str:
        """Sorted set queue -> Unix time of its worker's last heartbeat; stale members are pruned."""
        return f"{self.prefix}:workers"

    def fence(self, run_id: str) -> str:
        """The highest attempt that ever took the run's lease: an older one can never take it again."""
        return f"{self.prefix}:run:{run_id}:fence"

    @property
    def worker_seen(self) -> str:
        """Hash queue -> Unix time its worker was last present; it outlives the worker, to say when it left."""
        return f"{self.prefix}:worker-seen"

    @property
    def dispatch_lock(self) -> str:
        return f"{self.prefix}:dispatch:lock"

    @property
    def inference_stats(self) -> str:
        """Hash of inference request counts and latencies (``broker.usage``)."""
        return f"{self.prefix}:stats:inference"
