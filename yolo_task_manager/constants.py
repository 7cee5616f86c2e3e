"""Names and numbers that several layers share. Imports nothing of the package, so anything may import it."""

from __future__ import annotations

__all__ = [
    "EXIT_BROKER",
    "EXIT_DEVICE",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXPORT_FORMATS",
    "EXPORT_TASK",
    "INFER_TASK",
    "TASKS",
    "TRAIN_TASK",
]

EXIT_OK = 0
EXIT_ERROR = 1
"""A failed run or any other error."""
EXIT_USAGE = 2
EXIT_DEVICE = 3
"""The device asked for is not on this machine."""
EXIT_BROKER = 4
"""Redis or the registry database cannot be reached."""

TRAIN_TASK = "ytm.train"
INFER_TASK = "ytm.infer"
EXPORT_TASK = "ytm.export"

TASKS = ("classify", "detect", "obb", "pose", "segment")
"""The ultralytics tasks a run or a model may have."""

EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "torchscript": (),
    "onnx": ("onnx", "onnxslim", "onnxruntime"),
    "openvino": ("openvino",),
    "engine": ("tensorrt",),
}
"""Formats this system exports offline, and the modules each needs on the worker (our optional extras)."""
