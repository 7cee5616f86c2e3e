"""yolo-task-manager: multi-user, offline YOLO training on Celery workers, one per device.

Importing this package imports nothing heavy: names load on first use (PEP 562), so the training
child, which only needs ``workers``, does not pay for the producer API; torch and ultralytics are
imported only by workers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yolo_task_manager.api_client import YoloTaskManager
    from yolo_task_manager.errors import (
        AlreadyExists,
        BrokerUnavailable,
        DatabaseUnavailable,
        DeviceUnavailable,
        InvalidInput,
        InvalidTransition,
        LimitExceeded,
        NoLiveWorker,
        NotFound,
        StorageError,
        WaitTimeout,
        WeightsUnavailable,
        YoloTaskManagerError,
    )
    from yolo_task_manager.predictions import Detection, Prediction
    from yolo_task_manager.settings import Settings
    from yolo_task_manager.values import Event, EventType, ModelMeta, Run, RunSpec, RunStatus

_WHERE = {
    "YoloTaskManager": "api_client",
    "Settings": "settings",
    **dict.fromkeys(["Detection", "Prediction"], "predictions"),
    **dict.fromkeys(["Event", "EventType", "ModelMeta", "Run", "RunSpec", "RunStatus"], "values"),
    **dict.fromkeys(
        [
            "AlreadyExists",
            "BrokerUnavailable",
            "DatabaseUnavailable",
            "DeviceUnavailable",
            "InvalidInput",
            "InvalidTransition",
            "LimitExceeded",
            "NoLiveWorker",
            "NotFound",
            "StorageError",
            "WaitTimeout",
            "WeightsUnavailable",
            "YoloTaskManagerError",
        ],
        "errors",
    ),  # fmt: skip
}
__all__ = [
    "AlreadyExists", "BrokerUnavailable", "DatabaseUnavailable", "Detection", "DeviceUnavailable", "Event",
    "EventType", "InvalidInput", "InvalidTransition", "LimitExceeded", "ModelMeta", "NoLiveWorker", "NotFound",
    "Prediction", "Run", "RunSpec", "RunStatus", "Settings", "StorageError", "WaitTimeout", "WeightsUnavailable",
    "YoloTaskManager", "YoloTaskManagerError",
]  # fmt: skip
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'yolo_task_manager' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"yolo_task_manager.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
