"""Celery tasks. Their bodies live in modules that import nothing heavy, so producers stay light."""

from __future__ import annotations

from typing import Any

from celery import Celery

__all__ = ["register_tasks"]


def register_tasks(app: Celery) -> None:
    from yolo_task_manager.broker.app import TRAIN_TASK

    @app.task(name=TRAIN_TASK, bind=True)
    def train(self: Any, run_id: str, attempt: int, **readable: Any) -> str:
        """Train one attempt of a run; ``readable`` (user, name, model, epochs) is there for Flower."""
        from yolo_task_manager.tasks.train import execute_run

        return execute_run(self.app.ytm_runtime, run_id, attempt)
