"""The producer API: ``YoloTaskManager``, its argument checks, the event subscriber and feed, the SSE helper.

Runs in other services' processes, so it stays light: it must not import ``workers``, ``tasks``, torch,
ultralytics or OpenCV (an import-linter contract).
"""

from __future__ import annotations

from yolo_task_manager.api_client.manager import YoloTaskManager

__all__ = ["YoloTaskManager"]
