"""What a worker and its children agree on: the job a child is given, the messages it sends back, exit codes.

A child reads its job from a JSON file and writes one JSON object a line to a pipe. Each message kind is a
frozen dataclass with a ``TYPE`` tag; ``encode`` and ``decode`` are the only writer and reader of the wire
form. Light: the training child imports this before torch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from yolo_task_manager.values import RunSpec

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_STOPPED",
    "INFERENCE_REPLIES",
    "INFERENCE_REQUESTS",
    "JOB_FILE",
    "TRAINING_MESSAGES",
    "ChildCommand",
    "ChildFailed",
    "CheckpointSaved",
    "EpochMetrics",
    "ExportRequest",
    "LogLine",
    "Message",
    "PredictRequest",
    "ProtocolError",
    "Reply",
    "TrainingJob",
    "TrainingResult",
    "decode",
    "encode",
    "inference_child",
    "training_child",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3
"""The child stopped at a batch boundary on request, keeping the last epoch's resumable last.pt."""
EXIT_ORPHANED = 4
"""The child noticed that its worker died, and quit."""

JOB_FILE = "spec.json"
"""In the run folder: the ``TrainingJob`` of the attempt that runs there."""


ChildCommand = Callable[[Path, int, int], list[str]]
"""A training child's argv, given its job file, the write end of its message pipe and the read end of its
control pipe (stop requests; its closing means the worker is gone)."""


def training_child(job_file: Path, fd: int, control_fd: int) -> list[str]:
    return [sys.executable, "-m", "yolo_task_manager.workers.train_child", str(job_file), str(fd), str(control_fd)]


def inference_child(
    model: Path, task: str, user_id: str, root: Path, fds: tuple[int, int], readable: Sequence[Path] = ()
) -> list[str]:
    """An inference child for one model: requests on ``fds[0]``, a reply for each on ``fds[1]``; it reads
    images in the user's folder and in ``readable``."""
    module = "yolo_task_manager.workers.infer_child"
    return [sys.executable, "-m", module, str(model), task, user_id, str(root), *map(str, fds), *map(str, readable)]


class ProtocolError(Exception):
    """A line from a child that is not a message of its protocol (a bug, or a hostile child)."""


@dataclass(frozen=True, kw_only=True)
class TrainingJob:
    """One attempt of one run, as its training child receives it."""

    run_id: str
    attempt: int
    spec: RunSpec
    model: str
    """What ultralytics loads: the checked copy of the base checkpoint in the run folder, or a model yaml."""
    data: str
    """The data.yaml the worker wrote into the run folder."""
    torch_device: str
    save_dir: str
    """This attempt's own folder (``{run_dir}/attempts/{n}/train``): the worker promotes what it saves."""
    silence_limit: float | None = None
    """Seconds the child trains on without hearing from its worker; then it quits (the worker froze, and
    another attempt may own the run once the lease expires)."""
    save_wait: float | None = None
    """Seconds a child that must quit lets a checkpoint save finish first (its files are written by rename, so
    quitting mid-save leaves no truncated file)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainingJob:
        data = json.loads(text)
        return cls(**{**data, "spec": RunSpec.from_dict(data["spec"])})


@dataclass(frozen=True, kw_only=True)
class EpochMetrics:
    """One finished epoch (1-based) and its metrics."""

    TYPE: ClassVar[str] = "metrics"
    epoch: int
    epochs: int
    metrics: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class CheckpointSaved:
    TYPE: ClassVar[str] = "checkpoint"
    epoch: int
    epochs: int
    path: str


@dataclass(frozen=True, kw_only=True)
class LogLine:
    TYPE: ClassVar[str] = "log"
    message: str


@dataclass(frozen=True, kw_only=True)
class TrainingResult:
    """A finished training: where its best weights are and what the published model says about itself."""

    TYPE: ClassVar[str] = "result"
    best: str
    task: str
    labels: list[str]
    imgsz: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ChildFailed:
    TYPE: ClassVar[str] = "error"
    message: str
    traceback: str
    out_of_memory: bool = False


@dataclass(frozen=True, kw_only=True)
class PredictRequest:
    """To an inference child: predict on ``sources`` (as ``api_client.inference.encode_sources`` made them)."""

    TYPE: ClassVar[str] = "predict"
    sources: list[dict[str, Any]]
    opts: dict[str, Any]
    annotate_dir: str | None = None
    max_pixels: int | None = None
    """Refuse an image whose header declares more pixels (``Settings.max_image_pixels``)."""


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """To an inference child: export its model into ``out_dir``."""

    TYPE: ClassVar[str] = "export"
    fmt: str
    opts: dict[str, Any]
    out_dir: str


@dataclass(frozen=True, kw_only=True)
class Reply:
    """From an inference child: the answer to one request, or the typed error it raised."""

    TYPE: ClassVar[str] = "reply"
    predictions: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None
    error: str | None = None
    """The name of the ``YoloTaskManagerError`` subclass the request raised, or None."""
    message: str | None = None


Message = (
    EpochMetrics | CheckpointSaved | LogLine | TrainingResult | ChildFailed | PredictRequest | ExportRequest | Reply
)
TRAINING_MESSAGES: Mapping[str, type[Message]] = {
    kind.TYPE: kind for kind in (EpochMetrics, CheckpointSaved, LogLine, TrainingResult, ChildFailed)
}
INFERENCE_REQUESTS: Mapping[str, type[Message]] = {kind.TYPE: kind for kind in (PredictRequest, ExportRequest)}
INFERENCE_REPLIES: Mapping[str, type[Message]] = {Reply.TYPE: Reply}


def encode(message: Message) -> str:
    """One line: the message's fields and its ``type`` tag."""
    return json.dumps({"type": message.TYPE, **dataclasses.asdict(message)}, separators=(",", ":")) + "\n"


def decode(line: bytes | str, kinds: Mapping[str, type[Message]] = TRAINING_MESSAGES) -> Message:
    """The message on ``line``, as one of ``kinds``.

    Raises:
        ProtocolError: not JSON, an unknown tag, or fields that do not fit the tag's class.
    """
    try:
        data = json.loads(line)
        kind = kinds[data.pop("type")]
        return kind(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"not a message: {bytes(line[:200]) if isinstance(line, bytes) else line[:200]!r}") from exc
