"""Flower, started by `ytm flower` on loopback, shows the workers and a readable training task."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import TINY, Stack, wait_for
from yolo_task_manager import RunStatus
from yolo_task_manager.broker.embedded import free_port
from yolo_task_manager.broker.routing import queue_for_device

pytestmark = pytest.mark.slow


@pytest.fixture
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **stack.settings.to_env()}
    cmd = [sys.executable, "-m", "yolo_task_manager.cli", "flower", "--port", str(port), "--unauthenticated-api"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/tasks", timeout=2).status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, f"flower exited with {proc.returncode}"
            return False

    wait_for(up, 60, "flower to listen")
    yield url
    proc.terminate()
    proc.wait(15)


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
