"""Celery on Redis: app factory, key schema, routing, events, dispatch, embedded server."""

from __future__ import annotations

from yolo_task_manager.broker.app import TRAIN_TASK, create_app
from yolo_task_manager.broker.keys import Keys

__all__ = ["TRAIN_TASK", "Keys", "create_app"]
