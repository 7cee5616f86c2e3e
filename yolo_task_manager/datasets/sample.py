"""A small generated detection dataset (squares and discs), so the demo needs no download."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from yolo_task_manager.predictions import Detection

__all__ = ["CLASSES", "found_shapes", "make_sample_dataset"]

CLASSES = ("square", "disc")


def make_sample_dataset(dest: str | Path, *, train: int = 16, val: int = 8, size: int = 96, seed: int = 0) -> Path:
    """Write a YOLO dataset with ``data.yaml`` under ``dest`` (replacing nothing that exists); return it."""
    from PIL import Image, ImageDraw

    dest = Path(dest)
    if (dest / "data.yaml").is_file():
        return dest
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = Image.new("RGB", (size, size), tuple(rng.randint(0, 80) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            lines = []
            for _ in range(rng.randint(1, 3)):
                cls = rng.randrange(len(CLASSES))
                w = rng.randint(size // 5, size // 2)
                x0, y0 = rng.randint(0, size - w), rng.randint(0, size - w)
                color = tuple(rng.randint(150, 255) for _ in range(3))
                shape = draw.rectangle if cls == 0 else draw.ellipse
                shape([x0, y0, x0 + w, y0 + w], fill=color)
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + w / 2) / size:.6f} {w / size:.6f} {w / size:.6f}")
            image.save(dest / "images" / split / f"{split}_{i:03d}.png")
            (dest / "labels" / split / f"{split}_{i:03d}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    (dest / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames:\n{names}\n")
    return dest


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def found_shapes(label_file: Path, detections: Sequence[Detection], *, min_iou: float = 0.5) -> bool:
    """Whether a detection names the class of one of the image's shapes and covers it (IoU >= ``min_iou``).

    The demo's honest score: a model that predicts boxes everywhere, or the wrong shape, finds nothing.
    """
    truth = []
    for line in label_file.read_text().splitlines():
        cls, *xywhn = (float(v) for v in line.split())
        truth.append((int(cls), _corners(xywhn)))
    return any(
        d.class_id == cls and _iou(_corners(d.box_xywhn), box) >= min_iou for d in detections for cls, box in truth
    )


def _corners(xywhn: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = xywhn
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
