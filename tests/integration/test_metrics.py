"""`ytm metrics` as Prometheus scrapes it: runs by state and user, the waiting line per device, live workers,
a running run's progress, and inference requests with their latency."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import TINY, Stack, http_server, wait_for
from yolo_task_manager import RunStatus
from yolo_task_manager.broker.embedded import free_port
from yolo_task_manager.devices import queue_for_device
from yolo_task_manager.errors import NotFound

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics_url(stack: Stack) -> Iterator[str]:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    cmd = [sys.executable, "-m", "yolo_task_manager.cli", "metrics", "--port", url.split(":")[2].split("/")[0]]
    with http_server(cmd, {**os.environ, **stack.settings.to_env()}, url, 200):
        yield url


def scrape(url: str) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own parser: (name, labels) -> value."""
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_scrape_shows_runs_queues_workers_progress_and_inference(stack: Stack, metrics_url: str, shapes: Path,
                                                                   fixtures_dir: Path):  # fmt: skip
    queue = queue_for_device("cpu", stack.settings.node)
    stack.start_worker()
    mgr = stack.manager()

    # Given: a 3-epoch run training, and a second run waiting behind it for the one CPU worker
    first = mgr.train("mo", "yolov8n.pt", str(shapes), epochs=3, run_name="first", **TINY)
    second = mgr.train("mo", "yolov8n.pt", str(shapes), epochs=1, run_name="second", **TINY)

    # When: Prometheus scrapes while the first run trains
    def mid_run() -> Samples | None:
        samples = scrape(metrics_url)
        return samples if value(samples, "ytm_run_epoch", run_id=first, user="mo", queue=queue) else None

    during = wait_for(mid_run, 300, "a scrape showing the first run's progress")

    # Then: its progress, the waiting line, the live worker and the runs by state show
    running = {"run_id": first, "user": "mo", "queue": queue}
    assert value(during, "ytm_run_epochs", **running) == 3
    assert 1 <= (value(during, "ytm_run_epoch", **running) or 0) <= 3
    assert (value(during, "ytm_run_epoch_seconds", **running) or 0) > 0
    assert value(during, "ytm_run_fitness", **running) is not None
    assert value(during, "ytm_runs", status="running", user="mo") == 1
    assert value(during, "ytm_runs_waiting", device="cpu") == 1
    assert value(during, "ytm_workers_live", queue=queue) == 1
    assert value(during, "ytm_exporter_source_up", source="registry") == 1
    assert value(during, "ytm_exporter_source_up", source="redis") == 1

    # And when: both finish, and the user predicts (a model that is not there is refused before any worker)
    for run_id in (first, second):
        assert mgr.wait("mo", run_id, timeout=300).status is RunStatus.COMPLETED
    image = next((fixtures_dir / "images").iterdir())
    mgr.infer("mo", "first", [image])
    with pytest.raises(NotFound):
        mgr.infer("mo", "no-such-model", [image])
    after = scrape(metrics_url)

    # Then: the runs read as completed and nothing waits; each request is counted with its outcome and latency
    assert value(after, "ytm_runs", status="completed", user="mo") == 2
    assert value(after, "ytm_runs_waiting", device="cpu") is None
    assert value(after, "ytm_run_epoch", **running) is None
    ok = {"queue": queue, "outcome": "ok"}
    assert value(after, "ytm_inference_request_seconds_count", **ok) == 1
    assert value(after, "ytm_inference_request_seconds_bucket", **ok, le="+Inf") == 1
    assert (value(after, "ytm_inference_request_seconds_sum", **ok) or 0) > 0
    outcomes = {dict(labels)["outcome"] for name, labels in after if name == "ytm_inference_request_seconds_count"}
    assert outcomes == {"ok"}
