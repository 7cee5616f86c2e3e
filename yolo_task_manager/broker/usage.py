"""Inference requests and their latency, counted in Redis by every worker and read by the exporter.

One hash per deployment: per (queue, outcome), a count, a sum of seconds, and a count per latency bucket
(not cumulative here; the exporter sums them as Prometheus expects). Redis adds them up across workers, so
the numbers survive a worker's restart and need no shared process.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import redis

from yolo_task_manager.broker.keys import Keys

__all__ = ["BUCKETS", "InferenceStats", "LatencyCounts"]

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))
"""Upper bounds in seconds: a warm prediction takes tens of milliseconds, a cold one seconds."""


@dataclass
class LatencyCounts:
    """One (queue, outcome)'s requests: ``buckets[i]`` counts those that took at most ``BUCKETS[i]``, not less."""

    count: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))


class InferenceStats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.key = keys.inference_stats

    def record(self, queue: str, outcome: str, seconds: float) -> None:
        """Count one request that ended with ``outcome`` ("ok", or its error's name) after ``seconds``."""
        bucket = next(i for i, bound in enumerate(BUCKETS) if seconds <= bound)
        prefix = f"{queue}|{outcome}"
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, f"{prefix}|count", 1)
        pipe.hincrbyfloat(self.key, f"{prefix}|seconds", seconds)
        pipe.hincrby(self.key, f"{prefix}|bucket{bucket}", 1)
        pipe.execute()

    def read(self) -> dict[tuple[str, str], LatencyCounts]:
        counts: dict[tuple[str, str], LatencyCounts] = defaultdict(LatencyCounts)
        for raw_field, raw_value in self.client.hgetall(self.key).items():
            text = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            parts = text.rsplit("|", 2)
            if len(parts) != 3:
                continue
            queue, outcome, what = parts
            entry = counts[(queue, outcome)]
            if what == "count":
                entry.count = int(raw_value)
            elif what == "seconds":
                entry.seconds = float(raw_value)
            elif what.startswith("bucket") and what[6:].isdigit() and int(what[6:]) < len(BUCKETS):
                entry.buckets[int(what[6:])] = int(raw_value)
        return dict(counts)
