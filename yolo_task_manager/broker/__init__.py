"""Celery on Redis: app factory, key schema, events, leases, worker presence, stop requests, and the embedded
single-machine processes (Redis, a local worker).

Must not import ``workers``, ``tasks``, ``api_client``, torch or ultralytics (an import-linter contract).
"""

from __future__ import annotations

from yolo_task_manager.broker.app import create_app
from yolo_task_manager.broker.keys import Keys

__all__ = ["Keys", "create_app"]
