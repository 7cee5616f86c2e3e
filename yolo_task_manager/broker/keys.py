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

    def run_seq(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:seq"

    def run_reported_epoch(self, run_id: str) -> str:
        """The last epoch whose metrics event was published: a later copy of it is dropped."""
        return f"{self.prefix}:run:{run_id}:reported-epoch"

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

    def fence(self, run_id: str) -> str:
        """The highest attempt that ever took the run's lease: an older one can never take it again."""
        return f"{self.prefix}:run:{run_id}:fence"

    def worker(self, queue: str) -> str:
        """Present while a worker consumes ``queue``."""
        return f"{self.prefix}:worker:{queue}"

    @property
    def worker_seen(self) -> str:
        """Hash queue -> Unix time its worker was last present; it outlives the worker, to say when it left."""
        return f"{self.prefix}:worker-seen"

    @property
    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    @property
    def dispatch_lock(self) -> str:
        return f"{self.prefix}:dispatch:lock"

    @property
    def fairness(self) -> str:
        """Hash user_id -> turn of that user's last dispatch (round robin)."""
        return f"{self.prefix}:dispatch:last-turn"
