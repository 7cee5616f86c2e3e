"""Scheduling: which waiting run goes to which free device (``policy``, pure), applying it (``dispatcher``),
and finding runs whose worker or message was lost (``recovery``).

Above ``registry`` and ``broker``, below ``context``; like them it never imports the worker side, torch or
ultralytics (import-linter contracts).
"""

from __future__ import annotations

from yolo_task_manager.scheduling.dispatcher import Dispatcher
from yolo_task_manager.scheduling.policy import plan_dispatch

__all__ = ["Dispatcher", "plan_dispatch"]
