"""The infer and export tasks. Every failure comes back as data and is raised, typed, in the caller.

The model is loaded only in an inference child (``workers.infer_pool``), never in the worker process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from yolo_task_manager.broker.usage import InferenceStats
from yolo_task_manager.constants import EXPORT_FORMATS
from yolo_task_manager.errors import InvalidInput, NotFound, YoloTaskManagerError
from yolo_task_manager.ids import MAX_ID_LENGTH, validate_id
from yolo_task_manager.workers.context import WorkerContext
from yolo_task_manager.workers.infer_pool import ModelKey
from yolo_task_manager.workers.protocol import ExportRequest, PredictRequest

__all__ = ["execute_export", "execute_infer", "export_key"]

log = logging.getLogger(__name__)

PREDICT_TIMEOUT = 600.0
"""Seconds one inference request may take in its child before the child is stopped."""
EXPORT_TIMEOUT = 1800.0


def export_key(fmt: str, opts: dict[str, Any]) -> str:
    """The name an export is stored and reused under: ``onnx``, ``onnx-imgsz-320``, or, when the options do
    not make a short safe name, ``onnx-<hash of the options>``."""
    readable = "-".join([fmt, *(f"{k}-{v}" for k, v in sorted(opts.items()))])
    try:
        return validate_id(readable, "export key") if len(readable) <= MAX_ID_LENGTH else _hashed(fmt, opts)
    except InvalidInput:
        return _hashed(fmt, opts)


def _hashed(fmt: str, opts: dict[str, Any]) -> str:
    return f"{fmt}-{hashlib.sha1(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:12]}"


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, YoloTaskManagerError):
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    log.exception("task failed")
    return {"ok": False, "error": "YoloTaskManagerError",
            "message": f"the worker failed: {type(exc).__name__}: {exc} (see the worker's log)"}  # fmt: skip


def execute_infer(ctx: WorkerContext, request: dict[str, Any]) -> dict[str, Any]:
    """Predict, and count the request and its latency for the exporter (``ytm metrics``)."""
    started = time.monotonic()
    answer = _infer(ctx, request)
    try:
        outcome = "ok" if answer["ok"] else str(answer["error"])
        InferenceStats(ctx.redis, ctx.keys).record(ctx.queue, outcome, time.monotonic() - started)
    except redis.exceptions.RedisError as exc:  # the caller's predictions matter more than the count
        log.warning("inference statistics not recorded: %s", exc)
    return answer


def _infer(ctx: WorkerContext, request: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = ctx.storage.get_model(request["user_id"], request["model_name"])
        if request.get("export") and request["export"] not in meta.exports:
            raise NotFound(f"model {meta.name!r} has no {request['export']!r} export any more")
        path = Path(meta.exports[request["export"]]) if request.get("export") else meta.path
        annotate = None
        if request["save_annotated"]:
            annotate = str(ctx.storage.predictions_dir(meta.user_id, request["request_id"]))
        # Default to the size the model was trained at, not ultralytics' 640.
        opts = {"imgsz": meta.imgsz or 640, "conf": request["conf"], "iou": request["iou"], **request["opts"]}
        opts["device"] = ctx.torch_device
        ask = PredictRequest(sources=request["sources"], opts=opts, annotate_dir=annotate,
                             max_pixels=ctx.settings.max_image_pixels)  # fmt: skip
        reply = ctx.inference.ask(ModelKey.of(meta.user_id, path, meta.task), ask, PREDICT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, typed
        return _failure(exc)
    if reply.error:
        return {"ok": False, "error": reply.error, "message": reply.message}
    return {"ok": True, "predictions": reply.predictions, "model_loads": ctx.inference.loads}


def execute_export(ctx: WorkerContext, user_id: str, model_name: str, fmt: str, opts: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = ctx.storage.get_model(user_id, model_name)
        key = export_key(fmt, opts)
        if key in meta.exports and Path(meta.exports[key]).exists():
            return {"ok": True, "path": meta.exports[key]}
        missing = [m for m in EXPORT_FORMATS[fmt] if importlib.util.find_spec(m) is None]
        if missing:
            raise InvalidInput(
                f"export to {fmt} needs {', '.join(missing)} on the worker: "
                f"pip install 'yolo-task-manager[{fmt}]' there (nothing is installed at run time)"
            )
        if fmt == "engine" and ctx.torch_device == "cpu":
            raise InvalidInput("TensorRT (engine) export needs a GPU worker: pass device='cuda:N'")
        # Export in a scratch folder on the same volume, then move the result in atomically.
        with tempfile.TemporaryDirectory(dir=meta.path.parent, prefix=".export-") as scratch:
            ask = ExportRequest(fmt=fmt, opts={**opts, "device": ctx.torch_device}, out_dir=scratch)
            model = ModelKey.of(user_id, meta.path, meta.task)
            reply = ctx.inference.ask_once(model, ask, EXPORT_TIMEOUT, writable=Path(scratch))
            if reply.error or not reply.path:
                return {"ok": False, "error": reply.error or "YoloTaskManagerError", "message": reply.message}
            out = Path(reply.path)
            if not out.resolve().is_relative_to(Path(scratch).resolve()):
                raise InvalidInput("the export process named a file outside its scratch folder: refused")
            stored = ctx.storage.add_export(user_id, model_name, key, out)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, typed
        return _failure(exc)
    return {"ok": True, "path": str(stored)}
