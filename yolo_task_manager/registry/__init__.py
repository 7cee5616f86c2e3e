"""The SQL registry of runs, transitions and metrics."""

from __future__ import annotations

from yolo_task_manager.registry.registry import Registry

__all__ = ["Registry"]
