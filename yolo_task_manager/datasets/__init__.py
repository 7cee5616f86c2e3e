"""Dataset checks that run before a training run is queued, and again on the worker; the sample dataset.

Light (no torch, no ultralytics): producers run it. Imports only the shared value modules.
"""

from __future__ import annotations

from yolo_task_manager.datasets.checks import (
    IMAGE_SUFFIXES,
    DatasetInfo,
    inspect_dataset,
    write_training_data,
)

__all__ = ["IMAGE_SUFFIXES", "DatasetInfo", "inspect_dataset", "write_training_data"]
