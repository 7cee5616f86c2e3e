"""YOLO label files: each row checked with the bounds ultralytics enforces, and the task the rows imply."""

from __future__ import annotations

import math

from yolo_task_manager.datasets.files import MAX_LABEL_BYTES, UnreadableFile, excerpt, read_capped

__all__ = ["EXPECTED_FIELDS", "Kpt", "check_row", "fields_ok", "guess_task", "read_label"]

Kpt = tuple[int, int] | None  # kpt_shape from data.yaml: (keypoints, 2 or 3 values each)
_TOLERANCE = 0.01  # ultralytics 8.4 accepts coordinates up to 1% outside [0, 1]
EXPECTED_FIELDS = {
    "detect": "5 (class x_center y_center width height)",
    "segment": "an odd count of at least 7 (class x1 y1 x2 y2 x3 y3 ...), never mixed with 5-field boxes",
    "obb": "9 (class x1 y1 x2 y2 x3 y3 x4 y4)",
}


def check_row(parts: list[str], nc: int, kpt_shape: Kpt) -> str | None:
    """Say what is wrong with one label row, or None; the bounds are those ultralytics enforces."""
    if kpt_shape and len(parts) != 5 + kpt_shape[0] * kpt_shape[1]:
        want = 5 + kpt_shape[0] * kpt_shape[1]
        return f"{len(parts)} fields, a pose label with kpt_shape {list(kpt_shape)} needs {want}"
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return f"non-numeric field in {excerpt(' '.join(parts))}"
    if not all(math.isfinite(v) for v in values):
        return f"non-finite number in {excerpt(' '.join(parts))}"
    if not values[0].is_integer() or not 0 <= values[0] < nc:
        return f"class id {excerpt(parts[0], 20)[1:-1]} is not an integer in 0..{nc - 1}"
    box = values[1:5]
    if len(values) > 6 and not kpt_shape:  # polygon corners may leave the image (obb); their box may not
        xs, ys = values[1::2], values[2::2]
        box = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    # For pose, ultralytics bounds only the keypoints' x and y from above.
    points = [v for i, v in enumerate(values[5:]) if i % kpt_shape[1] < 2] if kpt_shape else box
    if max(points, default=0) > 1 + _TOLERANCE:
        return f"coordinate {max(points):g} is above 1: divide pixel values by the image size"
    low = min([*box, *values[5:]] if kpt_shape else box)
    if low < 0 and (low < -_TOLERANCE or min(box[2:4], default=0) < 0):
        return f"negative value {low:g}: coordinates are fractions of the image size, from 0 to 1"
    return None


def guess_task(seen: set[int], kpt_shape: Kpt) -> str:
    if kpt_shape:
        return "pose"
    return "obb" if seen == {9} else "segment" if max(seen, default=0) >= 7 else "detect"


def fields_ok(task: str, n: int) -> bool:
    return n >= 7 and n % 2 == 1 if task == "segment" else n == {"detect": 5, "obb": 9}.get(task, n)


def read_label(real: str, nc: int, kpt_shape: Kpt) -> dict[int, int] | str:
    """Map each field count to its first line number, or say what is wrong with the file."""
    try:
        text = read_capped(real, MAX_LABEL_BYTES, "label file").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"cannot be read as UTF-8 text (byte {exc.start} is not UTF-8)"
    except UnreadableFile as exc:
        return exc.reason
    counts: dict[int, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if problem := check_row(parts, nc, kpt_shape):
            return f"line {n}: {problem}"
        counts.setdefault(len(parts), n)
    return counts
