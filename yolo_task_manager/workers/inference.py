"""Predictions as ``Prediction`` dicts, for every input kind; runs in an inference child (``infer_child``)."""

from __future__ import annotations

import base64
import glob
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from yolo_task_manager.datasets import IMAGE_SUFFIXES
from yolo_task_manager.errors import InvalidInput

__all__ = ["VIDEO_SUFFIXES", "predict"]

VIDEO_SUFFIXES = frozenset({"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv", "webm"})
"""Like ``IMAGE_SUFFIXES``: lower case, without the dot."""  # fmt: skip


def _suffix(path: Path) -> str:
    return path.suffix[1:].lower()


def _expand(sources: list[dict[str, Any]], check: Callable[[Path], Any]) -> Iterator[tuple[str, str, Any]]:
    """(label, kind, payload) for each input, lazily: kind is "array", "video" or "error".

    ``check`` raises ``InvalidInput`` for a path the user may not read.
    """
    import cv2
    import numpy as np

    for source in sources:
        if "npy" in source:
            array = np.load(io.BytesIO(base64.b64decode(source["npy"])), allow_pickle=False)
            yield source["name"], "array", array
            continue
        if "data" in source:
            array = cv2.imdecode(np.frombuffer(base64.b64decode(source["data"]), np.uint8), cv2.IMREAD_COLOR)
            name = source["name"]
            yield (name, "array", array) if array is not None else (name, "error", "not a readable image")
            continue
        path = Path(source["path"])
        if any(ch in source["path"] for ch in "*?["):
            matches = sorted(glob.glob(source["path"]))
            if not matches:
                yield source["path"], "error", "no file matches"
            yield from _expand([{"path": m} for m in matches], check)
            continue
        try:
            check(path)
        except InvalidInput as exc:
            yield str(path), "error", str(exc)
            continue
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if _suffix(p) in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            yield from _expand([{"path": str(p)} for p in files], check)
        elif not path.is_file():
            yield str(path), "error", "no such file"
        elif _suffix(path) in VIDEO_SUFFIXES:
            yield str(path), "video", path
        else:
            array = cv2.imread(str(path))
            yield (str(path), "array", array) if array is not None else (str(path), "error", "not a readable image")


def _detections(result: Any) -> list[dict[str, Any]]:
    names = result.names
    height, width = result.orig_shape
    out: list[dict[str, Any]] = []
    if result.obb is not None:
        obb = result.obb
        for xyxy, xywhr, cls, conf in zip(
            obb.xyxy.tolist(), obb.xywhr.tolist(), obb.cls.tolist(), obb.conf.tolist(), strict=True
        ):
            out.append(_detection(names, cls, conf, xyxy, width, height, rotated_box=xywhr))
        return out
    if result.boxes is None:
        return out
    boxes = result.boxes
    polygons = result.masks.xy if result.masks is not None else None
    keypoints = result.keypoints.data.tolist() if result.keypoints is not None else None
    for i, (xyxy, cls, conf) in enumerate(
        zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
    ):
        out.append(
            _detection(
                names, cls, conf, xyxy, width, height,
                polygon=polygons[i].tolist() if polygons is not None else None,
                keypoints=keypoints[i] if keypoints is not None else None,
            )
        )  # fmt: skip
    return out


def _detection(
    names: Any, cls: float, conf: float, xyxy: list[float], width: int, height: int, **extra: Any
) -> dict[str, Any]:
    x1, y1, x2, y2 = xyxy
    xywhn = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return {"class_id": int(cls), "class_name": str(names[int(cls)]), "confidence": round(float(conf), 5),
            "box_xyxy": [round(v, 2) for v in xyxy], "box_xywhn": [round(v, 6) for v in xywhn],
            "polygon": None, "keypoints": None, "rotated_box": None, **extra}  # fmt: skip


def _prediction(result: Any, source: str, task: str, frame: int | None, annotated: Path | None) -> dict[str, Any]:
    height, width = result.orig_shape
    top_k: list[tuple[int, str, float]] = []
    if result.probs is not None:
        top_k = [(int(i), str(result.names[int(i)]), round(float(c), 5))
                 for i, c in zip(result.probs.top5, result.probs.top5conf.tolist(), strict=True)]  # fmt: skip
    if annotated is not None:
        import cv2

        annotated.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(annotated), result.plot())
    return {"source": source, "frame": frame, "width": width, "height": height, "task": task,
            "detections": _detections(result), "top_k": top_k,
            "annotated_path": str(annotated) if annotated is not None else None, "error": None}  # fmt: skip


def predict(
    model: Any,
    task: str,
    sources: list[dict[str, Any]],
    opts: dict[str, Any],
    annotate_dir: Path | None,
    check: Callable[[Path], Any],
) -> list[dict[str, Any]]:
    """Predictions for every input, in input order; unreadable inputs get an error entry.

    Inputs are decoded as they are predicted, 32 at a time, so a large folder does not fill memory.
    """
    out: list[list[dict[str, Any]]] = []
    pending: list[tuple[int, str, Any]] = []
    names: set[str] = set()

    def annotated(label: str) -> Path | None:
        if annotate_dir is None:
            return None
        name = Path(label).name
        while name in names:  # keep each input's file name; number repeats from two folders
            name = f"{Path(name).stem}_{len(names)}{Path(name).suffix}"
        names.add(name)
        return annotate_dir / name

    def flush() -> None:
        results = model.predict([array for _, _, array in pending], verbose=False, batch=len(pending), **opts)
        for (i, label, _), result in zip(pending, results, strict=True):
            out[i] = [_prediction(result, label, task, None, annotated(label))]
        pending.clear()

    for i, (label, kind, payload) in enumerate(_expand(sources, check)):
        out.append([])
        if kind == "array":
            pending.append((i, label, payload))
            if len(pending) == 32:
                flush()
        elif kind == "error":
            out[i] = [{"source": label, "task": task, "error": payload}]
        else:
            out[i] = _predict_video(model, task, label, payload, opts, annotate_dir)
    if pending:
        flush()
    if not out:
        raise InvalidInput("no images to predict on: the paths, folders or globs matched nothing")
    return [p for entries in out for p in entries]


def _predict_video(
    model: Any, task: str, label: str, path: Path, opts: dict[str, Any], annotate_dir: Path | None
) -> list[dict[str, Any]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    readable = capture.isOpened() and capture.read()[0]
    capture.release()
    if not readable:
        return [{"source": label, "task": task, "error": "not a readable video"}]
    frames = []
    for frame, result in enumerate(model.predict(str(path), stream=True, verbose=False, **opts)):
        name = annotate_dir / f"{path.stem}_{frame:06d}.jpg" if annotate_dir else None
        frames.append(_prediction(result, label, task, frame, name))
    return frames
