"""Predictions as ``Prediction`` dicts, for every input kind; runs in an inference child (``infer_child``)."""

from __future__ import annotations

import base64
import binascii
import errno
import glob
import io
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from yolo_task_manager.datasets import IMAGE_SUFFIXES
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.predictions import array_problem
from yolo_task_manager.settings import DEFAULT_MAX_IMAGE_PIXELS

__all__ = ["VIDEO_SUFFIXES", "default_max_pixels", "predict"]

VIDEO_SUFFIXES = frozenset({"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv", "webm"})
"""Like ``IMAGE_SUFFIXES``: lower case, without the dot."""  # fmt: skip


def _suffix(path: Path) -> str:
    return path.suffix[1:].lower()


def default_max_pixels() -> int:
    """The worker's pixel limit: ``ytm worker`` exports ``max_image_pixels`` as OpenCV's own variable, so that
    cv2 enforces the same number in formats Pillow cannot read a header of."""
    raw = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
    return int(raw) if raw.isdecimal() and int(raw) > 0 else DEFAULT_MAX_IMAGE_PIXELS


def _expand(
    sources: list[dict[str, Any]], check: Callable[[Path], Any], max_pixels: int
) -> Iterator[tuple[str, str, Any]]:
    """(label, kind, payload) for each input, lazily: kind is "array", "video" or "error".

    ``check`` raises ``InvalidInput`` for a path the user may not read. A path the user named gets an
    error entry; one found by a glob or in a folder that the user may not read is left out as if it did
    not exist, so no name of another user's file ever comes back.
    """
    for source in sources:
        name = str(source.get("name") or "image")
        try:
            if "invalid" in source:
                yield name, "error", str(source["invalid"])
            elif "npy" in source:
                yield (name, *_from_npy(base64.b64decode(source["npy"], validate=True), max_pixels))
            elif "data" in source:
                yield (name, *_from_bytes(base64.b64decode(source["data"], validate=True), max_pixels))
            else:
                yield from _expand_path(str(source["path"]), check, max_pixels)
        except binascii.Error:
            yield name, "error", "the image data is not valid base64"


def _expand_path(text: str, check: Callable[[Path], Any], max_pixels: int) -> Iterator[tuple[str, str, Any]]:
    if "\0" in text:
        yield text, "error", "not a path: it holds a NUL character"
    elif any(ch in text for ch in "*?["):
        # Every match passes the access check before anything is yielded: "no file matches" must read the
        # same whether another user's files matched or nothing did.
        matches = [m for m in sorted(glob.iglob(text)) if _allowed(Path(m), check)]
        if not matches:
            yield text, "error", "no file matches"
        for match in matches:
            yield from _expand_file(Path(match), check, max_pixels, listed=True)
    else:
        yield from _expand_file(Path(text), check, max_pixels, listed=False)


def _allowed(path: Path, check: Callable[[Path], Any]) -> bool:
    try:
        check(path)
    except (InvalidInput, OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False
    return True


def _expand_file(
    path: Path, check: Callable[[Path], Any], max_pixels: int, *, listed: bool
) -> Iterator[tuple[str, str, Any]]:
    """One path: ``listed`` when a glob or a folder found it, so that what the user may not read stays unseen."""
    label = str(path)
    try:
        check(path)
    except InvalidInput as exc:
        if not listed:
            yield label, "error", str(exc)
        return
    except (OSError, RuntimeError, ValueError):
        if not listed:
            yield label, "error", "cannot resolve the path (a symlink loop?)"
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if not listed:
            yield label, "error", "no such file" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else _cannot(exc)
        return
    if stat.S_ISDIR(mode):
        try:
            files = sorted(p for p in path.iterdir() if _suffix(p) in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        except OSError as exc:
            yield label, "error", _cannot(exc)
            return
        for file in files:
            yield from _expand_file(file, check, max_pixels, listed=True)
    elif not stat.S_ISREG(mode):
        yield label, "error", NOT_REGULAR
    elif _suffix(path) in VIDEO_SUFFIXES:
        yield label, "video", path
    else:
        yield (label, *_read_image(path, check, max_pixels))


NOT_REGULAR = "not a regular file (a pipe, a device or a socket): skipped, never opened"


def _cannot(exc: OSError) -> str:
    return f"cannot read it: {exc.strerror or exc}"


def _read_image(path: Path, check: Callable[[Path], Any], max_pixels: int) -> tuple[str, Any]:
    """Decode a file through the descriptor that was checked: O_NONBLOCK so that a pipe put in its place
    cannot block the worker, and the access check made again on what was really opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return "error", _cannot(exc)
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "error", NOT_REGULAR
        opened = Path(f"/proc/self/fd/{fd}")
        if opened.is_symlink() and not _allowed(Path(os.readlink(opened)), check):
            return "error", "the file was replaced while it was opened: skipped"
        limit = max(64 * 2**20, 8 * max_pixels)
        if st.st_size > limit:
            return "error", f"file too large for an image within the pixel limit ({st.st_size} bytes)"
        return _from_bytes(file.read(limit + 1), max_pixels)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that an image's header declares, read without decoding a pixel; None when Pillow does
    not know the format (cv2 then applies OPENCV_IO_MAX_IMAGE_PIXELS, the same limit in a worker).

    Each format's own opener reads just the header, in the order ``Image.open`` tries them. ``Image.open``
    itself would first apply Pillow's bomb limit, a process-wide number other than ours, and hide the size.
    """
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            accepted = not accept or accept(prefix)
            if not accepted or isinstance(accepted, str):
                continue
            with factory(io.BytesIO(data), "") as image:
                width, height = image.size
                return int(width), int(height)
        except Exception:  # noqa: BLE001 - a header no opener understands is cv2's to judge
            continue
    return None


def _from_bytes(data: bytes, max_pixels: int) -> tuple[str, Any]:
    import cv2
    import numpy as np

    if not data:
        return "error", "empty: not an image"
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        return "error", _too_large(*size, max_pixels)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        array = None
    if array is None:
        return "error", "not a readable image"
    problem = array_problem(array, max_pixels)
    return ("error", problem) if problem else ("array", array)


def _from_npy(data: bytes, max_pixels: int) -> tuple[str, Any]:
    import numpy as np

    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays need pickle; a truncated file
        return "error", f"not a readable array: {exc}"
    if not isinstance(array, np.ndarray):
        return "error", "not a readable array"
    problem = array_problem(array, max_pixels)
    return ("error", problem) if problem else ("array", array)


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return f"image too large ({width}\u00d7{height} pixels, limit {max_pixels})"


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
    *,
    max_pixels: int | None = None,
) -> list[dict[str, Any]]:
    """Predictions for every input, in input order; unreadable inputs get an error entry.

    Inputs are decoded as they are predicted, 32 at a time, so a large folder does not fill memory. An
    image (or video frame) whose header declares more than ``max_pixels`` pixels is refused before it is
    decoded (default: ``default_max_pixels()``).
    """
    limit = max_pixels or default_max_pixels()
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

    for i, (label, kind, payload) in enumerate(_expand(sources, check, limit)):
        out.append([])
        if kind == "array":
            pending.append((i, label, payload))
            if len(pending) == 32:
                flush()
        elif kind == "error":
            out[i] = [{"source": label, "task": task, "error": payload}]
        else:
            out[i] = _predict_video(model, task, label, payload, opts, annotate_dir, limit)
    if pending:
        flush()
    if not out:
        raise InvalidInput("no images to predict on: the paths, folders or globs matched nothing")
    return [p for entries in out for p in entries]


def _predict_video(
    model: Any,
    task: str,
    label: str,
    path: Path,
    opts: dict[str, Any],
    annotate_dir: Path | None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[dict[str, Any]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    width, height = (int(capture.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
    too_large = capture.isOpened() and width * height > max_pixels
    readable = capture.isOpened() and not too_large and capture.read()[0]
    capture.release()
    if too_large:
        return [{"source": label, "task": task, "error": _too_large(width, height, max_pixels)}]
    if not readable:
        return [{"source": label, "task": task, "error": "not a readable video"}]
    frames = []
    for frame, result in enumerate(model.predict(str(path), stream=True, verbose=False, **opts)):
        name = annotate_dir / f"{path.stem}_{frame:06d}.jpg" if annotate_dir else None
        frames.append(_prediction(result, label, task, frame, name))
    return frames
