"""The Celery app factory: Redis broker, one queue per device, readable task names.

It registers no task: producers send tasks by name, and the worker's composition root (``launch``)
registers the task bodies, so this layer never imports them.
"""

from __future__ import annotations

from celery import Celery

from yolo_task_manager.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings) -> Celery:
    """A Celery app on ``settings.redis_url``."""
    app = Celery("yolo_task_manager", broker=settings.redis_url, backend=settings.redis_url, set_as_current=False)
    app.conf.update(
        # Messages are acknowledged on receipt. Runs live in the registry, not in messages: a worker
        # that dies is found by its lease, a message that never started by the dispatcher, and a
        # duplicate is refused by the attempt check and the lease. (Late acks added nothing but a
        # worker crash when Redis restarts under a running task: kombu cannot ack on the dead channel.)
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_expires=3600,
        result_serializer="json",
        # Only messages fetched but not yet started are ever unacknowledged; a long timeout keeps them
        # from being delivered twice.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for expired deliveries a few times per timeout (kombu's default is every ~100 s).
            "unacked_restore_interval": max(1, min(10, int(settings.visibility_timeout // 4))),
            "unacked_restore_throttle": 1 if settings.visibility_timeout < 400 else 10,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        task_default_queue=f"{settings.key_prefix}.default",
    )
    return app
