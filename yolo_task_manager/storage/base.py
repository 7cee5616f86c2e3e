"""The storage protocol: the seed's four methods plus the primitives the tasks need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from yolo_task_manager.values import ModelMeta, ModelProvenance

__all__ = ["IStorage"]


@runtime_checkable
class IStorage(Protocol):
    """Where models and run artifacts live, per user.

    Callers pass ids that went through ``validate_id``; implementations may check again, and must never build a
    path outside the user's area from them.
    """

    def save_model(
        self,
        user_id: str,
        src_path: Path,
        model_name: str,
        labels: list[str],
        *,
        meta: ModelProvenance | Mapping[str, Any] | None = None,
        plots: Sequence[Path] = (),
    ) -> ModelMeta:
        """Publish ``src_path`` (and training ``plots``) as ``model_name``, atomically; raise ``AlreadyExists`` if
        the name is taken."""
        ...

    def list_models(self, user_id: str) -> list[ModelMeta]:
        """Every model of ``user_id``, sorted by name."""
        ...

    def delete_model(self, user_id: str, model_name: str) -> bool:
        """Remove the model and everything stored beside it; False when there was none."""
        ...

    def get_model(self, user_id: str, model_name: str) -> ModelMeta:
        """The model's metadata; raise ``NotFound`` when there is none."""
        ...

    def get_model_path(self, user_id: str, model_name: str) -> Path:
        """A local path to the model's weights; raise ``NotFound`` when there is none."""
        ...

    def add_export(self, user_id: str, model_name: str, key: str, src_path: Path) -> Path:
        """Store an exported file or folder beside the model under ``key`` and list it in its metadata."""
        ...

    def predictions_dir(self, user_id: str, request_id: str) -> Path:
        """A local folder (created on demand) for one inference request's annotated images."""
        ...

    def run_dir(self, user_id: str, run_id: str) -> Path:
        """A local folder (created on demand) for a run's checkpoints, logs and plots."""
        ...
