"""Queue names per device, and which queues a run's device request may use."""

from __future__ import annotations

import re

from yolo_task_manager.errors import InvalidInput

__all__ = ["device_matches", "normalize_device", "queue_for_device"]

_CUDA = re.compile(r"(?:cuda:)?(\d+)")


def normalize_device(device: str | int | None) -> str:
    """``None``/"auto" -> "auto"; 0, "0", "cuda:0" -> "cuda:0"; "cuda"/"gpu" -> "cuda"; "cpu"; or a queue name."""
    if device is None:
        return "auto"
    text = str(device).strip()
    keyword = text.lower()
    if keyword in ("auto", "cpu", "cuda"):
        return keyword
    if keyword == "gpu":
        return "cuda"
    if m := _CUDA.fullmatch(keyword):
        return f"cuda:{int(m.group(1))}"
    if re.fullmatch(r"(gpu\.[\w-]+\.\d+|cpu\.[\w-]+)", text):
        return text  # a queue name: the node part keeps its case
    raise InvalidInput(
        f"unknown device {device!r}: use 'cpu', 'cuda:N', 'cuda' (any GPU), 'auto', or a queue name like 'gpu.node1.0'"
    )


def queue_for_device(device: str, node: str) -> str:
    """The queue a worker for ``device`` ("cpu" or "cuda:N") on ``node`` consumes."""
    device = normalize_device(device)
    if device == "cpu":
        return f"cpu.{node}"
    if device.startswith("cuda:"):
        return f"gpu.{node}.{device.split(':')[1]}"
    raise InvalidInput(f"a worker serves one device, 'cpu' or 'cuda:N', not {device!r}")


def device_matches(request: str, queue: str) -> bool:
    """True when a run that asked for ``request`` may run on ``queue``."""
    if request == "auto" or request == queue:
        return True
    if request == "cpu":
        return queue.startswith("cpu.")
    if request == "cuda":
        return queue.startswith("gpu.")
    if request.startswith("cuda:"):
        return queue.startswith("gpu.") and queue.rsplit(".", 1)[1] == request.split(":")[1]
    return False
