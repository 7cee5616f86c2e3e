"""Flower, started by `ytm flower` on loopback, shows the workers and a readable training task."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import TINY, Stack, http_server, wait_for
from yolo_task_manager import RunStatus
from yolo_task_manager.broker.embedded import free_port
from yolo_task_manager.devices import queue_for_device

pytestmark = pytest.mark.slow


@pytest.fixture
def flower(stack: Stack) -> Iterator[str]:
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "yolo_task_manager.cli", "flower", "--port", url.rsplit(":", 1)[1],
           "--unauthenticated-api"]  # fmt: skip
    with http_server(cmd, {**os.environ, **stack.settings.to_env()}, f"{url}/api/tasks", 200):
        yield url


def test_flower_shows_the_worker_and_a_finished_training_task(stack: Stack, flower: str, coco8: Path):
    # Given: a worker, and a training that finished while Flower watched
    stack.start_worker()
    mgr = stack.manager()
    run_id = mgr.train("jo", "yolov8n.pt", str(coco8), epochs=1, run_name="watched", **TINY)
    assert mgr.wait("jo", run_id, timeout=300).status is RunStatus.COMPLETED

    # When: an operator asks Flower's HTTP API
    def train_tasks() -> list[dict]:
        tasks = httpx.get(f"{flower}/api/tasks", timeout=10).json().values()
        return [t for t in tasks if t["name"] == "ytm.train" and t["state"] == "SUCCESS"]

    tasks = wait_for(train_tasks, 30, "the training task in Flower")
    workers = httpx.get(f"{flower}/api/workers", params={"refresh": "true"}, timeout=30).json()

    # Then: the task reads as what it is, and the device's worker is listed
    task = tasks[0]
    assert run_id in task["args"] and "'user_id': 'jo'" in task["kwargs"] and "'run_name': 'watched'" in task["kwargs"]
    assert task["result"] == "'completed'"
    assert f"{queue_for_device('cpu', stack.settings.node)}@{stack.settings.node}" in workers
