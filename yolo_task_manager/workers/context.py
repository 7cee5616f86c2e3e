"""A worker's context: the shared services plus what one device's worker owns."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import redis
from celery import current_task

from yolo_task_manager.context import Context
from yolo_task_manager.devices import queue_for_device, torch_device, worker_device
from yolo_task_manager.pickles import check_checkpoint
from yolo_task_manager.settings import Settings
from yolo_task_manager.storage import IStorage
from yolo_task_manager.workers.children import start_child
from yolo_task_manager.workers.infer_pool import InferencePool, ModelKey
from yolo_task_manager.workers.protocol import ChildCommand, inference_child, training_child
from yolo_task_manager.workers.sandbox import SandboxedProcess, require_sandbox

__all__ = ["WorkerContext"]

log = logging.getLogger(__name__)

PUBLISH_PATIENCE = 600.0
"""Seconds a worker's publish retries while Redis is away: its events must not be lost to a restart."""


class WorkerContext(Context):
    """Everything the tasks of one device's worker use.

    Args:
        device: "cpu" or "cuda:N", the one device this worker serves.
        training_command: the training child's argv (tests give a fake child that speaks the protocol).
    """

    def __init__(
        self,
        settings: Settings,
        device: str,
        *,
        storage: IStorage | None = None,
        client: redis.Redis | None = None,
        training_command: ChildCommand = training_child,
    ) -> None:
        super().__init__(settings, storage=storage, client=client, publish_patience=PUBLISH_PATIENCE)
        self.device = worker_device(device)
        self.queue = queue_for_device(self.device, settings.node)
        self.torch_device = torch_device(self.queue)
        self.training_child = training_command
        self.sandboxed = require_sandbox(settings.sandbox or "on")
        """Whether children run in the sandbox: "on" refuses to build a worker where it cannot."""
        self.inference = InferencePool(settings.model_cache_size, self._start_inference, self.scratch_dir / "inference")
        """Warm inference children, one per model in use (``model_cache_size`` at most)."""
        self.shutting_down = threading.Event()
        """Set when the worker begins a warm shutdown: a running training is interrupted and requeued."""

    @property
    def scratch_dir(self) -> Path:
        """This worker's own caches and ultralytics config (``offline.offline_env``)."""
        return self.settings.state_dir / "workers" / self.queue

    def _start_inference(self, model: ModelKey, fds: tuple[int, int], job_dir: Path,
                         writable: Path | None) -> SandboxedProcess:  # fmt: skip
        """An inference child that reads the tenant's own area (not its runs) and writes its predictions."""
        if model.path.endswith(".pt"):
            check_checkpoint(Path(model.path))  # the models folder is on a shared volume, writable by others
        area = self.settings.storage_root / model.user_id
        predictions, runs = area / "predictions", area / "runs"
        for folder in (predictions, runs):  # made now: a folder made later would show through the area's bind
            folder.mkdir(parents=True, exist_ok=True)
        readable = [d for d in self.settings.readable_dirs(model.user_id) if d.is_dir()]
        argv = inference_child(Path(model.path), model.task, model.user_id, self.settings.storage_root, fds, readable)
        return start_child(
            argv, settings=self.settings, sandboxed=self.sandboxed, job_dir=job_dir,
            log_path=self.scratch_dir / "inference.log", pass_fds=fds, read_only=(area, *readable),
            writable=(predictions, *([writable] if writable else [])), masked=(runs,),
            gpu=self.device != "cpu",
        )  # fmt: skip

    def report_progress(self, epoch: int, epochs: int, fitness: float | None) -> None:
        """Tell Flower how far the training task running in this thread is: a ``task-progress`` event, which
        Flower shows as the state PROGRESS with this text as the task's result."""
        task = current_task._get_current_object()  # this thread's task: the pool runs one per thread
        if task is None or not task.request.id:
            return  # not inside a Celery task (tests drive the supervisor directly)
        text = f"epoch {epoch}/{epochs}" + (f", fitness {fitness:.4f}" if fitness is not None else "")
        try:
            task.send_event("task-progress", result=text, epoch=epoch, epochs=epochs, fitness=fitness)
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop a training
            log.warning("progress event not sent: %s", exc)

    def close(self) -> None:
        self.inference.close()
        super().close()
