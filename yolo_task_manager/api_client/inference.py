"""Producer side of inference and export: encode inputs safely, check options, read replies."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from yolo_task_manager import errors
from yolo_task_manager.errors import InvalidInput, WaitTimeout
from yolo_task_manager.predictions import Prediction

__all__ = ["EXPORT_OPTIONS", "PREDICT_OPTIONS", "InferenceHandle", "encode_sources", "raise_failure"]

_SIZE = (int, list, tuple)
PREDICT_OPTIONS: dict[str, tuple[type, ...]] = {
    "imgsz": _SIZE, "max_det": (int,), "classes": (int, list, tuple), "agnostic_nms": (bool,), "augment": (bool,),
    "half": (bool,), "retina_masks": (bool,), "vid_stride": (int,),
}  # fmt: skip
EXPORT_OPTIONS: dict[str, tuple[type, ...]] = {
    "imgsz": _SIZE, "dynamic": (bool,), "simplify": (bool,), "opset": (int,), "batch": (int,), "nms": (bool,),
    "workspace": (int, float),
}  # fmt: skip
"""Not int8 or half: quantising needs calibration data, which ultralytics would download (coco8)."""
MAX_INLINE_BYTES = 64 * 1024 * 1024


def check_options(opts: dict[str, Any], allowed: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    """Known option names with values of the right type (a bool is not a number here)."""
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown {what} option(s) {unknown}: use {sorted(allowed)}")
    for name, value in opts.items():
        types = allowed[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise InvalidInput(f"{what} option {name!r} must be {expected}, got {value!r}")
    return dict(opts)


def check_threshold(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def encode_sources(images: Any) -> list[dict[str, Any]]:
    """Paths stay paths (the worker reads them from the shared volume); bytes and numpy arrays travel
    in the message, base64-encoded (arrays as ``.npy``, loaded without pickle)."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise InvalidInput("images is empty: pass a path, a folder, a glob, a video, bytes or numpy arrays")
    sources: list[dict[str, Any]] = []
    total = 0
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            # Absolute here: the worker's working directory means nothing to the caller.
            sources.append({"path": os.path.abspath(os.path.expanduser(str(item)))})
            continue
        if isinstance(item, (bytes, bytearray, memoryview)):
            source = {"data": base64.b64encode(bytes(item)).decode(), "name": f"image_{i}.jpg"}
        elif type(item).__module__ == "numpy":
            import numpy as np

            buffer = io.BytesIO()
            np.save(buffer, item, allow_pickle=False)
            source = {"npy": base64.b64encode(buffer.getvalue()).decode(), "name": f"image_{i}.jpg"}
        else:
            raise InvalidInput(f"images[{i}] is a {type(item).__name__}: pass paths, bytes or numpy arrays")
        total += len(source.get("data") or source["npy"])
        sources.append(source)
    if total > MAX_INLINE_BYTES:
        raise InvalidInput(
            f"{total / 2**20:.0f} MiB of in-memory images is too much for one message: "
            "write them to the shared volume and pass their paths"
        )
    return sources


def raise_failure(reply: dict[str, Any]) -> None:
    """Raise the typed error a worker reported."""
    if reply.get("ok"):
        return
    error_type = getattr(errors, reply.get("error", ""), errors.YoloTaskManagerError)
    if not (isinstance(error_type, type) and issubclass(error_type, errors.YoloTaskManagerError)):
        error_type = errors.YoloTaskManagerError
    raise error_type(reply.get("message"))


class InferenceHandle:
    """A running ``infer_async``: ``get()`` waits for the predictions."""

    def __init__(self, result: AsyncResult) -> None:
        self._result = result
        self.model_loads: int | None = None
        """After ``get()``: how many models the serving worker has loaded so far (cache misses)."""

    def ready(self) -> bool:
        return bool(self._result.ready())

    def get(self, timeout: float | None = 600.0) -> list[Prediction]:
        try:
            reply = self._result.get(timeout=timeout, disable_sync_subtasks=False)
        except CeleryTimeout:
            raise WaitTimeout(f"inference did not finish within {timeout}s; the worker may be busy") from None
        finally:
            if self._result.ready():
                self._result.forget()
        raise_failure(reply)
        self.model_loads = reply.get("model_loads")
        return [Prediction.from_dict(p) for p in reply["predictions"]]
