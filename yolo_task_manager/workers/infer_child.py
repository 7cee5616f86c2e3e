"""The inference child: loads one tenant's model once, then answers requests until its stdin closes.

Run as ``python -m yolo_task_manager.workers.infer_child MODEL TASK USER_ID ROOT REQUESTS_FD REPLIES_FD
[READABLE...]`` by
the worker's ``InferencePool``, sandboxed like the training child: a tenant's model is a pickle, and loading
it runs code, so it is never loaded in the worker, which holds credentials. Requests (``PredictRequest``,
``ExportRequest``) arrive one JSON line each on ``REQUESTS_FD``; each gets one ``Reply`` on ``REPLIES_FD``.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from yolo_task_manager.errors import YoloTaskManagerError
from yolo_task_manager.ids import check_access
from yolo_task_manager.workers.inference import predict
from yolo_task_manager.workers.offline import configure_ultralytics
from yolo_task_manager.workers.protocol import (
    INFERENCE_REQUESTS,
    ExportRequest,
    PredictRequest,
    Reply,
    decode,
    encode,
)


def _answer(model: Any, model_path: Path, task: str, check: Callable[[Path], Path], request: object) -> Reply:
    if isinstance(request, PredictRequest):
        annotate = Path(request.annotate_dir) if request.annotate_dir else None
        limit = request.max_pixels
        predictions = predict(model, task, request.sources, request.opts, annotate, check, max_pixels=limit)
        return Reply(predictions=predictions)
    if isinstance(request, ExportRequest):
        from ultralytics import YOLO

        # Export a copy: ultralytics writes its output beside the weights it was given.
        weights = Path(shutil.copy(model_path, Path(request.out_dir) / "model.pt"))
        out = YOLO(str(weights), task=task).export(format=request.fmt, **request.opts)
        return Reply(path=str(out))
    return Reply(error="YoloTaskManagerError", message=f"unknown request {type(request).__name__}")


def serve(
    model_path: Path, task: str, user_id: str, root: Path, readable: tuple[Path, ...], requests: TextIO,
    replies: TextIO,
) -> None:
    from ultralytics import YOLO

    configure_ultralytics()
    model = YOLO(str(model_path), task=task)

    def check(path: Path) -> Path:
        return check_access(path, root, user_id, also=readable)

    for line in requests:
        try:
            reply = _answer(model, model_path, task, check, decode(line, INFERENCE_REQUESTS))
        except YoloTaskManagerError as exc:
            reply = Reply(error=type(exc).__name__, message=str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, typed
            traceback.print_exception(exc)
            reply = Reply(error="YoloTaskManagerError",
                          message=f"the inference process failed: {type(exc).__name__}: {exc}")  # fmt: skip
        replies.write(encode(reply))
        replies.flush()


def main(argv: list[str]) -> int:
    model_path, task, user_id, root = Path(argv[1]), argv[2], argv[3], Path(argv[4])
    readable = tuple(Path(p) for p in argv[7:])
    with os.fdopen(int(argv[5]), "r") as requests, os.fdopen(int(argv[6]), "w", buffering=1) as replies:
        serve(model_path, task, user_id, root, readable, requests, replies)
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip torch's second-long teardown
