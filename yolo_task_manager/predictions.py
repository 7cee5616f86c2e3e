"""Inference results: one ``Prediction`` per image or video frame, JSON-serialisable."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ARRAY_DTYPES", "Detection", "Prediction", "array_problem"]


@dataclass(frozen=True, kw_only=True)
class Detection:
    """One object; the task decides which optional parts are set."""

    class_id: int
    class_name: str
    confidence: float
    box_xyxy: tuple[float, float, float, float]
    """Pixels in the original image."""
    box_xywhn: tuple[float, float, float, float]
    """Centre x, centre y, width, height, normalised to [0, 1]."""
    polygon: tuple[tuple[float, float], ...] | None = None
    """segment: the mask outline in pixels."""
    keypoints: tuple[tuple[float, float, float], ...] | None = None
    """pose: (x, y, visibility confidence) per keypoint, pixels."""
    rotated_box: tuple[float, float, float, float, float] | None = None
    """obb: centre x, centre y, width, height (pixels), rotation (radians)."""


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """What the model saw in one image or frame, or why it could not look."""

    source: str
    frame: int | None = None
    width: int | None = None
    height: int | None = None
    task: str | None = None
    detections: tuple[Detection, ...] = ()
    top_k: tuple[tuple[int, str, float], ...] = ()
    """classify: (class id, class name, probability), best first."""
    annotated_path: str | None = None
    error: str | None = None
    """Set when this input could not be read; the other inputs of the batch still get predictions."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prediction:
        detections = tuple(
            Detection(
                **{
                    **d,
                    "box_xyxy": tuple(d["box_xyxy"]),
                    "box_xywhn": tuple(d["box_xywhn"]),
                    "polygon": tuple(map(tuple, d["polygon"])) if d.get("polygon") is not None else None,
                    "keypoints": tuple(map(tuple, d["keypoints"])) if d.get("keypoints") is not None else None,
                    "rotated_box": tuple(d["rotated_box"]) if d.get("rotated_box") is not None else None,
                }
            )
            for d in data.get("detections", ())
        )
        top_k = tuple(tuple(t) for t in data.get("top_k", ()))
        return cls(**{**data, "detections": detections, "top_k": top_k})

    @property
    def ok(self) -> bool:
        return self.error is None


ARRAY_DTYPES = frozenset({"uint8", "uint16"})
"""What ultralytics reads as pixels (uint16 scaled to 8 bits, as cv2 and Pillow do)."""


def array_problem(array: Any, max_pixels: int | None = None) -> str | None:
    """Why ``array`` cannot be predicted on, or None: an (H, W) or (H, W, 1-4 channels) uint8/uint16 image."""
    shape, dtype = tuple(array.shape), array.dtype
    if dtype.name not in ARRAY_DTYPES:
        return f"a {dtype} array is not an image: pass uint8 BGR pixels (or uint16), e.g. array.astype(numpy.uint8)"
    if len(shape) not in (2, 3) or (len(shape) == 3 and not 1 <= shape[2] <= 4):
        return f"an array of shape {shape} is not one image: pass (height, width) or (height, width, 3) arrays"
    if not all(shape):
        return f"an array of shape {shape} has no pixels"
    if max_pixels is not None and shape[0] * shape[1] > max_pixels:
        return f"image too large ({shape[1]}×{shape[0]} pixels, limit {max_pixels})"
    return None
