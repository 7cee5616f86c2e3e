"""Devices: what a run may ask for, the queue each worker consumes, and the order queues are tried in.

Three spellings of one concept, each with its own function:
- a *request* ("auto", "cpu", "cuda", "cuda:N", or a queue name) is what a user asks for;
- a *queue* (``gpu.<node>.<index>``, ``cpu.<node>``) is what one worker consumes;
- a *torch device* ("cpu", or "0" inside a worker pinned with ``CUDA_VISIBLE_DEVICES``) is what ultralytics gets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from yolo_task_manager.errors import InvalidInput

__all__ = [
    "device_matches",
    "gpu_first",
    "infer_queue",
    "normalize_device",
    "queue_for_device",
    "torch_device",
    "worker_device",
]

_CUDA = re.compile(r"(?:cuda:)?(\d+)")
_QUEUE = re.compile(r"(gpu\.[\w-]+\.\d+|cpu\.[\w-]+)")


def normalize_device(device: object) -> str:
    """``None``/"auto" -> "auto"; 0, "0", "cuda:0" -> "cuda:0"; "cuda"/"gpu" -> "cuda"; "cpu"; or a queue name."""
    if device is None:
        return "auto"
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise InvalidInput(f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__}")
    text = str(device).strip()
    keyword = text.lower()
    if keyword in ("auto", "cpu", "cuda"):
        return keyword
    if keyword == "gpu":
        return "cuda"
    if m := _CUDA.fullmatch(keyword):
        return f"cuda:{int(m.group(1))}"
    if _QUEUE.fullmatch(text):
        return text  # a queue name: the node part keeps its case
    raise InvalidInput(
        f"unknown device {str(device)[:80]!r}: use 'cpu', 'cuda:N', 'cuda' (any GPU), 'auto', "
        "or a queue name like 'gpu.node1.0'"
    )


def worker_device(device: object) -> str:
    """The one device a worker serves: "cpu" or "cuda:N"."""
    device = normalize_device(device)
    if device != "cpu" and not device.startswith("cuda:"):
        raise InvalidInput(f"a worker serves one device, 'cpu' or 'cuda:N', not {device!r}")
    return device


def queue_for_device(device: str, node: str) -> str:
    """The queue a worker for ``device`` ("cpu" or "cuda:N") on ``node`` consumes."""
    device = worker_device(device)
    return f"cpu.{node}" if device == "cpu" else f"gpu.{node}.{device.split(':')[1]}"


def infer_queue(queue: str) -> str:
    """The queue of a device's inference and export tasks, served beside its one training."""
    return f"{queue}.infer"


def torch_device(queue: str) -> str:
    """What ultralytics is given on the worker of ``queue``: its one GPU is pinned, so it is always "0"."""
    return "cpu" if queue.startswith("cpu.") else "0"


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


def gpu_first(queues: Iterable[str]) -> list[str]:
    """Queues in the order they are offered: GPUs before CPUs, so a run that may use either gets the faster."""
    return sorted(queues, key=lambda q: (not q.startswith("gpu."), q))
