"""Producer side of inference and export: encode inputs safely, check options, read replies."""

from __future__ import annotations

import base64
import io
import math
import os
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from yolo_task_manager import errors
from yolo_task_manager.errors import InvalidInput, WaitTimeout
from yolo_task_manager.predictions import Prediction, array_problem
from yolo_task_manager.redact import shown

__all__ = [
    "EXPORT_OPTIONS",
    "PREDICT_OPTIONS",
    "InferenceHandle",
    "check_options",
    "check_path_text",
    "check_threshold",
    "encode_sources",
    "raise_failure",
]

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
_RANGES: dict[str, tuple[float, float]] = {
    "imgsz": (32, 8192), "max_det": (1, 10_000), "classes": (0, 100_000), "vid_stride": (1, 10_000),
    "opset": (1, 100), "batch": (1, 1024), "workspace": (0, 1024),
}  # fmt: skip
"""Bounds of the numeric options: a worker must not be asked for a 10**9-pixel canvas or a million boxes."""
_MAX_LIST = {"imgsz": 2, "classes": 10_000}
MAX_INLINE_BYTES = 64 * 1024 * 1024
MAX_PATH_BYTES = 4096
"""PATH_MAX on Linux: a longer path names no file."""


def check_options(opts: dict[str, Any], allowed: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    """Known option names with values of the right type (a bool is not a number here), within bounds."""
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown {what} option(s) {unknown}: use {sorted(allowed)}")
    for name, value in opts.items():
        types = allowed[name]
        expected = " or ".join(t.__name__ for t in types)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InvalidInput(f"{what} option {name!r} must be {expected}, got {shown(value)}")
        if isinstance(value, (list, tuple)):
            if not 1 <= len(value) <= _MAX_LIST.get(name, 0):
                raise InvalidInput(f"{what} option {name!r} takes 1 to {_MAX_LIST.get(name, 0)} values")
            for item in value:
                if isinstance(item, bool) or not isinstance(item, int):
                    raise InvalidInput(f"{what} option {name!r} must hold integers, got {shown(item)}")
                _check_range(what, name, item)
        elif not isinstance(value, bool):
            _check_range(what, name, value)
    return dict(opts)


def _check_range(what: str, name: str, value: Any) -> None:
    low, high = _RANGES.get(name, (-math.inf, math.inf))
    if not low <= value <= high:  # also false for nan
        raise InvalidInput(f"{what} option {name!r} must be from {low:g} to {high:g}, got {shown(value)}")


def check_threshold(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name} must be a number in [0, 1], got {shown(value)}")
    return float(value)


def check_path_text(path: str, what: str) -> None:
    """Refuse what no file name can hold: a NUL character, more bytes than PATH_MAX."""
    if "\0" in path:
        raise InvalidInput(f"{what} holds a NUL character, which no file name can: {shown(path)}")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidInput(f"{what} is longer than any path ({MAX_PATH_BYTES} bytes)")


def _path(item: str | os.PathLike[str], i: int) -> str:
    path = os.fspath(item)
    if not isinstance(path, str):
        raise InvalidInput(f"images[{i}] is a bytes path: pass it as str")
    check_path_text(path, f"images[{i}]")
    # Absolute here: the worker's working directory means nothing to the caller.
    return os.path.abspath(os.path.expanduser(path))


def encode_sources(images: Any) -> list[dict[str, Any]]:
    """Paths stay paths (the worker reads them from the shared volume); bytes and numpy arrays travel
    in the message, base64-encoded (arrays as ``.npy``, loaded without pickle). An array that is no image
    travels as its error, so the rest of the batch is predicted.

    Raises:
        InvalidInput: an input of a kind that can never be an image, or a path no file can have.
    """
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise InvalidInput("images is empty: pass a path, a folder, a glob, a video, bytes or numpy arrays")
    sources: list[dict[str, Any]] = []
    total = 0
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            sources.append({"path": _path(item, i)})
            continue
        name = f"image_{i}.jpg"
        if isinstance(item, (bytes, bytearray, memoryview)):
            source = {"data": base64.b64encode(bytes(item)).decode(), "name": name}
        elif _is_array(item):
            import numpy as np

            if problem := array_problem(item):
                sources.append({"invalid": problem, "name": name})
                continue
            buffer = io.BytesIO()
            np.save(buffer, item, allow_pickle=False)
            source = {"npy": base64.b64encode(buffer.getvalue()).decode(), "name": name}
        else:
            raise InvalidInput(
                f"images[{i}] is a {type(item).__name__}: pass paths, folders, globs, bytes or numpy arrays"
            )
        total += len(source["data"] if "data" in source else source["npy"])
        sources.append(source)
    if total > MAX_INLINE_BYTES:
        raise InvalidInput(
            f"{total / 2**20:.0f} MiB of in-memory images is too much for one message: "
            "write them to the shared volume and pass their paths"
        )
    return sources


def _is_array(item: object) -> bool:
    """A numpy array (or subclass), told without importing numpy for callers who never use it."""
    if not type(item).__module__.startswith("numpy"):
        return False
    import numpy as np

    return isinstance(item, np.ndarray)


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
