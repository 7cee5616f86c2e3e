"""Inference request counts and latencies, as workers record them in Redis for ``ytm metrics``."""

from __future__ import annotations

import fakeredis
import pytest

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.usage import BUCKETS, InferenceStats


def test_inference_statistics_add_up_per_queue_and_outcome_with_each_request_in_its_latency_bucket():
    stats = InferenceStats(fakeredis.FakeRedis(), Keys("t"))
    for seconds in (0.01, 0.05, 0.3, 1e6):
        stats.record("cpu.n1", "ok", seconds)
    stats.record("cpu.n1", "InvalidInput", 2.0)

    counts = stats.read()
    ok = counts[("cpu.n1", "ok")]
    assert ok.count == 4 and ok.seconds == pytest.approx(0.36 + 1e6)
    assert ok.buckets[BUCKETS.index(0.05)] == 2  # 0.05 itself belongs to its own bound
    assert ok.buckets[BUCKETS.index(0.5)] == 1 and ok.buckets[-1] == 1 and sum(ok.buckets) == 4
    failed = counts[("cpu.n1", "InvalidInput")]
    assert failed.count == 1 and failed.buckets[BUCKETS.index(2.5)] == 1
