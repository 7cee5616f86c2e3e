"""Value objects: run states, event kinds, and the frozen records the API returns."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["TERMINAL", "Event", "EventType", "ModelMeta", "ModelProvenance", "Run", "RunSpec", "RunStatus"]


class RunStatus(str, enum.Enum):
    """Where a run is in its life."""

    QUEUED = "queued"
    """Waiting in the registry for a device slot (round robin across users)."""
    DISPATCHED = "dispatched"
    """Sent to one device's queue as a new attempt (``queue``, ``attempt``), not started yet."""
    RUNNING = "running"
    """A worker holds its lease and trains it."""
    COMPLETED = "completed"
    """Training finished and the model was published."""
    FAILED = "failed"
    """Training raised, its input was bad, or it gave up after ``max_attempts`` failed attempts or
    ``max_worker_losses`` lost workers; ``reason`` says why."""
    STOPPED = "stopped"
    """Stopped on request; ``resume()`` continues from the last checkpoint."""
    TIMED_OUT = "timed_out"
    """Ran past its ``max_duration``; ``resume()`` continues from the last checkpoint."""
    INTERRUPTED = "interrupted"
    """Its worker vanished or shut down; it goes back to the queue and resumes from ``last.pt``."""


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.TIMED_OUT})


class EventType(str, enum.Enum):
    """Kinds of event on a run's channel and stream."""

    STATUS = "status"
    METRICS = "metrics"
    CHECKPOINT = "checkpoint"
    LOG = "log"


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event; ``seq`` is contiguous per run, starting at 1."""

    run_id: str
    user_id: str
    seq: int
    type: EventType
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: RunStatus | None = None
    reason: str | None = None
    ts: float = field(default_factory=time.time)

    def to_json(self) -> str:
        data = asdict(self)
        data["type"] = self.type.value
        data["status"] = self.status.value if self.status else None
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        data = json.loads(raw)
        data["type"] = EventType(data["type"])
        data["status"] = RunStatus(data["status"]) if data.get("status") else None
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What ``train()`` was asked for, once validated. The registry stores it; the training child reads it back."""

    user_id: str
    run_name: str
    base_model: str
    """What ultralytics loads: a checkpoint's absolute path, or a model yaml (a path or a built-in name)."""
    dataset_dir: str
    task: str
    epochs: int
    device: str
    """A device request: "auto", "cpu", "cuda", "cuda:N" or a queue name."""
    hyp: dict[str, Any] = field(default_factory=dict)
    """Extra ultralytics training arguments, checked against ultralytics' own list."""
    max_duration: float | None = None
    """Seconds; past them the run ends ``timed_out``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class Run:
    """A training run as the registry knows it: its ``spec`` (as fields) and where it is in its life."""

    run_id: str
    user_id: str
    run_name: str
    status: RunStatus
    base_model: str
    dataset_dir: str
    task: str
    epochs: int
    device: str
    hyp: dict[str, Any]
    attempt: int
    queue: str | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    last_epoch: int | None
    model_name: str | None
    max_duration: float | None
    failed_attempts: int = 0
    """Attempts whose training died on its own without reporting an error (retried up to ``max_attempts``)."""
    worker_losses: int = 0
    """Attempts that ended interrupted: their worker vanished, froze or shut down (up to ``max_worker_losses``)."""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def spec(self) -> RunSpec:
        return RunSpec(
            user_id=self.user_id, run_name=self.run_name, base_model=self.base_model, dataset_dir=self.dataset_dir,
            task=self.task, epochs=self.epochs, device=self.device, hyp=dict(self.hyp),
            max_duration=self.max_duration,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ModelProvenance:
    """What the run that made a model says of it; storage keeps it beside the weights (``ModelMeta`` shows it)."""

    task: str
    base_model: str | None = None
    run_id: str | None = None
    imgsz: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trained_on: str | None = None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class ModelMeta:
    """A published model: ``{root}/{user_id}/models/{name}/``."""

    name: str
    user_id: str
    path: Path
    task: str
    labels: tuple[str, ...]
    created_at: datetime
    size_bytes: int
    base_model: str | None = None
    run_id: str | None = None
    imgsz: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)
    """Export key (format, plus options when given) -> stored path."""
    trained_on: str | None = None
    """The queue (device) that trained it; inference goes there by default."""
    plots: tuple[str, ...] = ()
    """Training pictures (results curves, confusion matrix, label statistics), when trained with plots on."""

    @property
    def key_metric(self) -> tuple[str, float] | None:
        """("mAP50-95", value) for detection-like tasks, ("top1", value) for classification."""
        for key, label in (("metrics/accuracy_top1", "top1"), ("metrics/mAP50-95(M)", "mAP50-95"),
                           ("metrics/mAP50-95(P)", "mAP50-95"), ("metrics/mAP50-95(B)", "mAP50-95")):  # fmt: skip
            if key in self.metrics:
                return label, self.metrics[key]
        return None
