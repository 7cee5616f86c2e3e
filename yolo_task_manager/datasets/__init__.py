"""Dataset checks that run before a training run is queued."""

from __future__ import annotations

from yolo_task_manager.datasets.checks import (
    IMAGE_SUFFIXES,
    DatasetInfo,
    inspect_dataset,
    write_training_data,
)

__all__ = ["IMAGE_SUFFIXES", "DatasetInfo", "inspect_dataset", "write_training_data"]
