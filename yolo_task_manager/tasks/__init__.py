"""The Celery tasks of a worker: train, infer, export; idempotent, and each told which attempt it is for.

Tasks reach their worker's context through ``WorkerTask.context`` (celery's base-Task pattern). They are
registered by the worker's composition root (``launch``); producers send them by name and never import
this package. Must not import ``api_client``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from yolo_task_manager.constants import EXPORT_TASK, INFER_TASK, TRAIN_TASK
from yolo_task_manager.tasks.infer import execute_export, execute_infer
from yolo_task_manager.tasks.train import execute_run
from yolo_task_manager.values import RunStatus
from yolo_task_manager.workers.context import WorkerContext

__all__ = ["AttemptEnded", "WorkerTask", "register_tasks"]

_NOT_COMPLETED = frozenset(s.value for s in (RunStatus.FAILED, RunStatus.STOPPED, RunStatus.TIMED_OUT,
                                             RunStatus.INTERRUPTED))  # fmt: skip


class AttemptEnded(Exception):
    """A training attempt that ended without completing its run: failed, stopped, timed out or interrupted
    (then requeued). Raised only for Flower's sake, and expected (``throws``): logged without a traceback."""


class WorkerTask(Task):  # type: ignore[misc]  # celery ships no type information
    """A task that runs with its worker's context."""

    _context: WorkerContext | None = None

    @property
    def context(self) -> WorkerContext:
        if self._context is None:
            raise RuntimeError(f"task {self.name} runs only in a worker started by `ytm worker`")
        return self._context


def register_tasks(app: Celery, context: WorkerContext) -> None:
    """Register the three tasks on ``app``, each bound to ``context``."""
    base = type("BoundWorkerTask", (WorkerTask,), {"_context": context})

    def train(task: WorkerTask, run_id: str, attempt: int, **readable: Any) -> str:
        """Train one attempt of a run; ``readable`` (user, name, model, dataset, epochs) is there for Flower.

        Raises:
            AttemptEnded: the attempt did not complete its run, so that Flower shows FAILURE with the reason.
                The message was acknowledged on receipt: raising changes nothing of the requeue.
        """
        outcome = execute_run(task.context, run_id, attempt)
        if outcome in _NOT_COMPLETED:
            reason = task.context.registry.get_run(run_id).reason
            raise AttemptEnded(f"{outcome}: {reason or 'no reason recorded'}")
        return outcome

    def infer(task: WorkerTask, request: dict[str, Any]) -> dict[str, Any]:
        """Predict with a user's model; returns {"ok", "predictions"} or {"ok": False, "error", "message"}."""
        return execute_infer(task.context, request)

    def export(task: WorkerTask, user_id: str, model_name: str, fmt: str, opts: dict[str, Any]) -> dict[str, Any]:
        """Export a user's model; returns {"ok", "path"} or {"ok": False, "error", "message"}."""
        return execute_export(task.context, user_id, model_name, fmt, opts)

    app.task(name=TRAIN_TASK, base=base, bind=True, ignore_result=True, throws=(AttemptEnded,))(train)
    app.task(name=INFER_TASK, base=base, bind=True, ignore_result=False)(infer)
    app.task(name=EXPORT_TASK, base=base, bind=True, ignore_result=False)(export)
