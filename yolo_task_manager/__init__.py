"""yolo-task-manager: multi-user, offline YOLO training on Celery workers, one per device.

Importing this package does not import torch or ultralytics; only the workers' training children do.
"""

from __future__ import annotations

from yolo_task_manager.api_client import YoloTaskManager
from yolo_task_manager.errors import (
    BrokerUnavailable,
    DeviceUnavailable,
    InvalidInput,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    StorageError,
    WaitTimeout,
    WeightsUnavailable,
    YoloTaskManagerError,
)
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Event, EventType, ModelMeta, Run, RunStatus

__all__ = [
    "BrokerUnavailable",
    "DeviceUnavailable",
    "Event",
    "EventType",
    "InvalidInput",
    "InvalidTransition",
    "LimitExceeded",
    "ModelMeta",
    "NotFound",
    "Run",
    "RunStatus",
    "Settings",
    "StorageError",
    "WaitTimeout",
    "WeightsUnavailable",
    "YoloTaskManager",
    "YoloTaskManagerError",
]
__version__ = "0.1.0"
