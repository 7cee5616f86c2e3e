"""What producers and workers share, built completely from one ``Settings``: Redis, registry, storage,
events, stop requests and dispatch; and the one path by which a run changes state.

The worker's own context (its queue, torch device, model cache) extends this in ``workers.context``.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from yolo_task_manager.broker.app import create_app
from yolo_task_manager.broker.events import EventBus
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.stops import StopRequests
from yolo_task_manager.constants import TRAIN_TASK
from yolo_task_manager.errors import BrokerUnavailable
from yolo_task_manager.registry import Registry
from yolo_task_manager.scheduling import Dispatcher
from yolo_task_manager.settings import Settings
from yolo_task_manager.storage import IStorage, storage_from_settings
from yolo_task_manager.values import TERMINAL, EventType, Run, RunStatus

__all__ = ["Context", "ProducerContext"]


class Context:
    """Connections and services of one process.

    Args:
        storage: the storage backend; by default the one ``settings`` name.
        client: a Redis client to use instead of one on ``settings.redis_url`` (tests pass fakeredis).
        publish_patience: seconds a publish keeps retrying while Redis is away.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        storage: IStorage | None = None,
        client: redis.Redis | None = None,
        publish_patience: float = 0.0,
    ) -> None:
        if client is None and not settings.redis_url:
            raise BrokerUnavailable("no Redis to connect to: set redis_url (YTM_REDIS_URL)")
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis: redis.Redis = client or redis.Redis.from_url(
            settings.redis_url or "", socket_keepalive=True, health_check_interval=30
        )
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(settings.sql_url)
        self.storage = storage or storage_from_settings(settings)
        self.bus = EventBus(self.redis, self.keys, self.registry.events)
        self.stops = StopRequests(self.redis, self.keys)
        self.app = create_app(settings)
        self.dispatcher = Dispatcher(settings, self.redis, self.registry, self.send_run, self.transition)
        self.publish_patience = publish_patience

    def publish(self, run_id: str, user_id: str, type: EventType, **fields: Any) -> None:
        """Publish an event; while Redis is unreachable, retry its push (never its storing: the registry has it
        once) for ``publish_patience`` seconds, then raise. Readers find an unpushed event in the registry."""
        deadline = time.monotonic() + self.publish_patience
        self.bus.publish(run_id, user_id, type, **fields)
        while self.bus.unpushed:
            try:
                self.bus.push()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def transition(self, run_id: str, to: RunStatus, **kwargs: Any) -> Run:
        """The one path of a state change: the registry's guarded update, then its status event.

        Raises:
            InvalidTransition: the run is not in a state it may leave for ``to`` (or another attempt owns it).
        """
        run = self.registry.record_transition(run_id, to, **kwargs)
        if to in TERMINAL:  # a stop request ends with the run, whatever ended it
            self.stops.clear(run_id)
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
                    "dataset": run.dataset_dir, "epochs": run.epochs},
            queue=queue,
        )  # fmt: skip

    def close(self) -> None:
        self.redis.close()
        self.registry.close()


class ProducerContext(Context):
    """A producer's context: it only records and enqueues, and fails fast when Redis is away."""

    def __init__(self, settings: Settings, *, storage: IStorage | None = None, client: redis.Redis | None = None):
        super().__init__(settings, storage=storage, client=client, publish_patience=0.0)
