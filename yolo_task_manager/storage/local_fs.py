"""Models and runs as folders under one root: ``{root}/{user_id}/models/{model_name}/``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolo_task_manager.errors import InvalidInput, NotFound, StorageError
from yolo_task_manager.ids import validate_id
from yolo_task_manager.values import ModelMeta

__all__ = ["LocalFileSystemStorage"]

WEIGHTS = "model.pt"
META = "meta.json"


class LocalFileSystemStorage:
    """The default ``IStorage``: a local or shared (NFS, k8s volume) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalFileSystemStorage(root={str(self.root)!r})"

    def _models_dir(self, user_id: str) -> Path:
        return self.root / validate_id(user_id, "user_id") / "models"

    def _model_dir(self, user_id: str, model_name: str) -> Path:
        return self._models_dir(user_id) / validate_id(model_name, "model_name")

    def save_model(
        self,
        user_id: str,
        src_path: Path,
        model_name: str,
        labels: list[str],
        *,
        meta: Mapping[str, Any] | None = None,
        plots: Sequence[Path] = (),
    ) -> ModelMeta:
        final = self._model_dir(user_id, model_name)
        src_path = Path(src_path)
        if not src_path.is_file():
            raise StorageError(f"cannot publish model {model_name!r}: {src_path} does not exist")
        # Build the whole folder aside, then rename it into place: readers see all of it or nothing.
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir(parents=True)
            shutil.copyfile(src_path, tmp / WEIGHTS)
            if plots:
                (tmp / "plots").mkdir()
            for plot in plots:
                shutil.copyfile(plot, tmp / "plots" / Path(plot).name)
            record = {
                **(meta or {}),
                "name": model_name,
                "user_id": user_id,
                "labels": list(labels),
                "created_at": datetime.now(timezone.utc).isoformat(),
                "size_bytes": (tmp / WEIGHTS).stat().st_size,
                "plots": [f"plots/{Path(plot).name}" for plot in plots],
            }
            (tmp / META).write_text(json.dumps(record, indent=2))
            try:
                os.rename(tmp, final)
            except OSError:
                if final.exists():
                    raise InvalidInput(
                        f"user {user_id!r} already has a model named {model_name!r}: "
                        "delete it first or choose another name"
                    ) from None
                raise
        except OSError as exc:
            raise StorageError(f"cannot publish model {model_name!r} under {self.root}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return _read_meta(final)

    def list_models(self, user_id: str) -> list[ModelMeta]:
        folder = self._models_dir(user_id)
        if not folder.is_dir():
            return []
        return [_read_meta(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".") and (p / META).is_file()]

    def get_model(self, user_id: str, model_name: str) -> ModelMeta:
        folder = self._model_dir(user_id, model_name)
        if not (folder / META).is_file():
            raise NotFound(f"user {user_id!r} has no model named {model_name!r}: see list_models()")
        return _read_meta(folder)

    def delete_model(self, user_id: str, model_name: str) -> bool:
        folder = self._model_dir(user_id, model_name)
        trash = folder.parent / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete model {model_name!r}: {exc}") from exc
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def get_model_path(self, user_id: str, model_name: str) -> Path:
        return self.get_model(user_id, model_name).path

    def add_export(self, user_id: str, model_name: str, key: str, src_path: Path) -> Path:
        folder = self._model_dir(user_id, model_name)
        src_path = Path(src_path)
        final = folder / "exports" / validate_id(key, "export key") / src_path.name
        with _locked(folder):
            meta = json.loads((folder / META).read_text())
            if key in meta.get("exports", {}) and (folder / meta["exports"][key]).exists():
                return folder / str(meta["exports"][key])
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src_path, final)  # same volume: atomic, file or folder
            meta.setdefault("exports", {})[key] = str(final.relative_to(folder))
            tmp = folder / f".{META}.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, folder / META)
        return final

    def predictions_dir(self, user_id: str, request_id: str) -> Path:
        path = self.root / validate_id(user_id, "user_id") / "predictions" / validate_id(request_id, "request_id")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run_dir(self, user_id: str, run_id: str) -> Path:
        path = self.root / validate_id(user_id, "user_id") / "runs" / validate_id(run_id, "run_id")
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a model's metadata, across processes sharing the volume."""
    try:
        handle = open(folder / ".lock", "a")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise NotFound(f"model {folder.name!r} is gone (deleted meanwhile?): see list_models()") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read_meta(folder: Path) -> ModelMeta:
    data = json.loads((folder / META).read_text())
    return ModelMeta(
        name=data["name"],
        user_id=data["user_id"],
        path=folder / WEIGHTS,
        task=data.get("task", "detect"),
        labels=tuple(data.get("labels", ())),
        created_at=datetime.fromisoformat(data["created_at"]),
        size_bytes=int(data.get("size_bytes", 0)),
        base_model=data.get("base_model"),
        run_id=data.get("run_id"),
        imgsz=data.get("imgsz"),
        metrics=dict(data.get("metrics", {})),
        exports={key: str(folder / rel) for key, rel in data.get("exports", {}).items()},
        trained_on=data.get("trained_on"),
        plots=tuple(str(folder / rel) for rel in data.get("plots", ())),
    )
