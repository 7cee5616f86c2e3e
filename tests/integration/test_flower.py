"""Flower, started by `ytm flower` on loopback, shows the workers and a readable training task."""

from __future__ import annotations

import contextlib
import os
import re
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


def flower_server(stack: Stack, port: int, **env: str) -> contextlib.AbstractContextManager[object]:
    cmd = [sys.executable, "-m", "yolo_task_manager.cli", "flower", "--port", str(port), "--unauthenticated-api"]
    return http_server(cmd, {**os.environ, **stack.settings.to_env(), **env}, f"http://127.0.0.1:{port}/api/tasks", 200)


@pytest.fixture
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    with flower_server(stack, port):
        yield f"http://127.0.0.1:{port}"


def train_tasks(flower: str) -> dict[str, dict]:
    """Flower's training tasks, by run id."""
    tasks = httpx.get(f"{flower}/api/tasks", timeout=10).json().values()
    return {t["args"].split("'")[1]: t for t in tasks if t["name"] == "ytm.train"}


def test_flower_shows_the_worker_and_a_finished_training_task(stack: Stack, flower: str, coco8: Path):
    # Given: a worker, and a training that finished while Flower watched
    stack.start_worker()
    mgr = stack.manager()
    run_id = mgr.train("jo", "yolov8n.pt", str(coco8), epochs=1, run_name="watched", **TINY)
    assert mgr.wait("jo", run_id, timeout=300).status is RunStatus.COMPLETED

    # When: an operator asks Flower's HTTP API
    def succeeded() -> list[dict]:
        return [t for t in train_tasks(flower).values() if t["state"] == "SUCCESS"]

    tasks = wait_for(succeeded, 30, "the training task in Flower")
    workers = httpx.get(f"{flower}/api/workers", params={"refresh": "true"}, timeout=30).json()

    # Then: the task reads as what it is, and the device's worker is listed
    task = tasks[0]
    assert run_id in task["args"] and "'user_id': 'jo'" in task["kwargs"] and "'run_name': 'watched'" in task["kwargs"]
    assert task["result"] == "'completed'"
    assert f"{queue_for_device('cpu', stack.settings.node)}@{stack.settings.node}" in workers


def test_flower_shows_progress_then_the_true_end_of_each_run_and_keeps_it_across_a_restart(
    stack: Stack, coco8: Path, tmp_path: Path
):
    # Given: a persistent Flower (as in compose) and a worker
    port = free_port()
    flower = f"http://127.0.0.1:{port}"
    persistent = {"FLOWER_PERSISTENT": "true", "FLOWER_DB": str(tmp_path / "flower.db")}
    stack.start_worker()
    mgr = stack.manager()
    with flower_server(stack, port, **persistent):
        # When: a 20-epoch run trains (long enough for the stop below to come before its end)
        run_id = mgr.train("jo", "yolov8n.pt", str(coco8), epochs=20, run_name="progress", **TINY)

        # Then: Flower shows it in PROGRESS with its epoch, and its user, run, base model and dataset in the list
        def in_progress() -> dict | None:
            task = train_tasks(flower).get(run_id)
            return task if task and task["state"] == "PROGRESS" else None

        task = wait_for(in_progress, 300, "the training in PROGRESS")
        assert re.fullmatch(r"epoch \d+/20, fitness \d+\.\d{4}", task["result"]), task["result"]
        base = stack.settings.pretrained_dir / "yolov8n.pt"
        for shown in ("'user_id': 'jo'", "'run_name': 'progress'", f"'base_model': '{base}'",
                      f"'dataset': '{coco8.resolve()}'"):  # fmt: skip
            assert shown in task["kwargs"]

        # And when: it is stopped by its user
        mgr.stop("jo", run_id)
        assert mgr.wait("jo", run_id, timeout=300).status is RunStatus.STOPPED

        # Then: the attempt reads as FAILURE with the reason, not SUCCESS
        def ended() -> dict | None:
            task = train_tasks(flower).get(run_id)
            return task if task and task["state"] == "FAILURE" else None

        assert "stopped: stopped by user" in wait_for(ended, 60, "the stopped run as FAILURE")["exception"]

    # And: a restarted Flower still knows it
    with flower_server(stack, port, **persistent):
        assert train_tasks(flower)[run_id]["state"] == "FAILURE"
