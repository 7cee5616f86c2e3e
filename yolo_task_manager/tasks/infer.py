"""The infer and export tasks. Expected failures come back as data and are raised in the caller."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from yolo_task_manager.errors import InvalidInput, YoloTaskManagerError

__all__ = ["EXPORT_FORMATS", "execute_export", "execute_infer", "export_key"]

EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "torchscript": (),
    "onnx": ("onnx", "onnxslim", "onnxruntime"),
    "openvino": ("openvino",),
    "engine": ("tensorrt",),
}
"""Formats this system exports offline, and the modules each needs (our optional extras)."""


def export_key(fmt: str, opts: dict[str, Any]) -> str:
    """One stored export per format and options: ``onnx``, ``onnx-dynamic-True-imgsz-320``."""
    parts = [fmt, *(f"{k}-{v}" for k, v in sorted(opts.items()))]
    return "-".join(str(p).replace("/", "_") for p in parts)[:64]


def _failure(exc: YoloTaskManagerError) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__, "message": str(exc)}


def execute_infer(rt: Any, request: dict[str, Any]) -> dict[str, Any]:
    from yolo_task_manager.workers.inference import predict

    try:
        meta = rt.storage.get_model(request["user_id"], request["model_name"])
        path = Path(meta.exports[request["export"]]) if request.get("export") else meta.path
        model = rt.model_cache.get(path, meta.task)
        annotate = (
            rt.storage.predictions_dir(meta.user_id, request["request_id"]) if request["save_annotated"] else None
        )
        # Default to the size the model was trained at, not ultralytics' 640.
        opts = {"imgsz": meta.imgsz or 640, "conf": request["conf"], "iou": request["iou"], **request["opts"]}
        opts["device"] = rt.torch_device
        predictions = predict(model, meta.task, request["sources"], opts, annotate)
    except YoloTaskManagerError as exc:
        return _failure(exc)
    return {"ok": True, "predictions": predictions, "model_loads": rt.model_cache.loads}


def execute_export(rt: Any, user_id: str, model_name: str, fmt: str, opts: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = rt.storage.get_model(user_id, model_name)
        key = export_key(fmt, opts)
        if key in meta.exports and Path(meta.exports[key]).exists():
            return {"ok": True, "path": meta.exports[key]}
        missing = [m for m in EXPORT_FORMATS[fmt] if importlib.util.find_spec(m) is None]
        if missing:
            raise InvalidInput(
                f"export to {fmt} needs {', '.join(missing)} on the worker: "
                f"pip install 'yolo-task-manager[{fmt}]' there (nothing is installed at run time)"
            )
        if fmt == "engine" and rt.torch_device == "cpu":
            raise InvalidInput("TensorRT (engine) export needs a GPU worker: pass device='cuda:N'")
        from ultralytics import YOLO

        # Export a copy in a scratch folder on the same volume, then move the result in atomically.
        with tempfile.TemporaryDirectory(dir=meta.path.parent, prefix=".export-") as scratch:
            weights = Path(shutil.copy(meta.path, Path(scratch) / "model.pt"))
            out = YOLO(str(weights), task=meta.task).export(format=fmt, device=rt.torch_device, **opts)
            stored = rt.storage.add_export(user_id, model_name, key, Path(out))
    except YoloTaskManagerError as exc:
        return _failure(exc)
    return {"ok": True, "path": str(stored)}
