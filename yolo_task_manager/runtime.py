"""What the producer and the workers share: Redis, the registry, storage, events, dispatch."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from yolo_task_manager.broker.app import TRAIN_TASK, create_app
from yolo_task_manager.broker.dispatch import Dispatcher
from yolo_task_manager.broker.events import EventBus
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import Registry
from yolo_task_manager.settings import Settings
from yolo_task_manager.storage import IStorage, storage_from_settings
from yolo_task_manager.values import TERMINAL, EventType, Run, RunStatus

if TYPE_CHECKING:
    from yolo_task_manager.workers.inference import ModelCache

__all__ = ["Runtime"]


class Runtime:
    """Connections and services built from one ``Settings``."""

    def __init__(self, settings: Settings, storage: IStorage | None = None) -> None:
        if not settings.redis_url:
            raise ValueError("Runtime needs settings.redis_url")
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_keepalive=True, health_check_interval=30)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(settings.sql_url)
        self.storage = storage or storage_from_settings(settings)
        self.bus = EventBus(self.redis, self.keys)
        self.app = create_app(settings)
        self.app.ytm_runtime = self  # type: ignore[attr-defined]
        self.dispatcher = Dispatcher(settings, self.redis, self.registry, self.send_run, self.transition)
        self.shutting_down = threading.Event()
        # Set by a worker (workers/launch.py); a producer leaves them empty.
        self.worker_queue: str | None = None
        self.torch_device = "cpu"
        self.model_cache: ModelCache | None = None
        self.publish_patience = 0.0
        """Seconds a publish keeps retrying while Redis is away: 0 for producers (they fail fast), minutes
        for workers, whose events must not be lost to a Redis restart."""

    def publish(self, run_id: str, user_id: str, type: EventType, **fields: Any) -> None:
        """Publish an event, retrying for ``publish_patience`` seconds if Redis is unreachable."""
        deadline = time.monotonic() + self.publish_patience
        while True:
            try:
                self.bus.publish(run_id, user_id, type, **fields)
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def transition(self, run_id: str, to: RunStatus, **kwargs: Any) -> Run:
        """Apply a guarded transition and publish it as a status event."""
        run = self.registry.transition(run_id, to, **kwargs)
        if to in TERMINAL:  # a stop request ends with the run, whatever ended it
            self.redis.delete(self.keys.stop_flag(run_id))
        self.publish(
            run.run_id, run.user_id, EventType.STATUS, status=to, reason=run.reason, epoch=run.last_epoch,
            epochs=run.epochs,
        )  # fmt: skip
        return run

    def send_run(self, run: Run, queue: str, attempt: int) -> None:
        """Enqueue one attempt of a run on a device queue; the readable kwargs are for Flower."""
        self.app.send_task(
            TRAIN_TASK,
            args=[run.run_id, attempt],
            kwargs={"user_id": run.user_id, "run_name": run.run_name, "base_model": run.base_model,
                    "epochs": run.epochs},
            queue=queue,
        )  # fmt: skip

    def close(self) -> None:
        self.redis.close()
        self.registry.close()
