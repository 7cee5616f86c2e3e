"""Celery tasks. Their bodies live in modules that import nothing heavy, so producers stay light."""

from __future__ import annotations

from typing import Any

from celery import Celery

__all__ = ["register_tasks"]


def register_tasks(app: Celery) -> None:
    from yolo_task_manager.broker.app import EXPORT_TASK, INFER_TASK, TRAIN_TASK

    @app.task(name=TRAIN_TASK, bind=True, ignore_result=True)
    def train(self: Any, run_id: str, attempt: int, **readable: Any) -> str:
        """Train one attempt of a run; ``readable`` (user, name, model, epochs) is there for Flower."""
        from yolo_task_manager.tasks.train import execute_run

        return execute_run(self.app.ytm_runtime, run_id, attempt)

    @app.task(name=INFER_TASK, bind=True, ignore_result=False)
    def infer(self: Any, request: dict[str, Any]) -> dict[str, Any]:
        """Predict with a user's model; returns {"ok", "predictions"} or {"ok": False, "error", "message"}."""
        from yolo_task_manager.tasks.infer import execute_infer

        return execute_infer(self.app.ytm_runtime, request)

    @app.task(name=EXPORT_TASK, bind=True, ignore_result=False)
    def export(self: Any, user_id: str, model_name: str, fmt: str, opts: dict[str, Any]) -> dict[str, Any]:
        """Export a user's model; returns {"ok", "path"} or {"ok": False, "error", "message"}."""
        from yolo_task_manager.tasks.infer import execute_export

        return execute_export(self.app.ytm_runtime, user_id, model_name, fmt, opts)
