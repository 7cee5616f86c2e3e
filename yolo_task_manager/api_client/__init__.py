"""The producer API."""

from __future__ import annotations

from yolo_task_manager.api_client.manager import YoloTaskManager

__all__ = ["YoloTaskManager"]
