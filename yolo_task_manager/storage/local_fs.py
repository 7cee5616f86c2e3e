"""Models and runs as folders under one root: ``{root}/{user_id}/models/{model_name}/``.

A user's folder may hold links and files the user put there, ``meta.json`` included: every folder is
reached through ``ids.Area`` (a link out of the user's area reads as a missing folder), and a model's owner
and name come from the path that was validated, never from its ``meta.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolo_task_manager import durable
from yolo_task_manager.datasets.files import UnreadableFile, read_capped
from yolo_task_manager.errors import AlreadyExists, InvalidInput, NotFound, StorageError
from yolo_task_manager.ids import Area, validate_id
from yolo_task_manager.values import ModelMeta, ModelProvenance

__all__ = ["KNOWN_TASKS", "LocalFileSystemStorage"]

WEIGHTS = "model.pt"
META = "meta.json"
KNOWN_TASKS = frozenset({"detect", "segment", "semantic", "depth", "classify", "pose", "obb"})
_MAX_META_BYTES = 1 << 20
log = logging.getLogger(__name__)


class _Damaged(Exception):
    """A model's meta.json says something no published model says."""


class LocalFileSystemStorage:
    """The default ``IStorage``: a local or shared (NFS, k8s volume) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalFileSystemStorage(root={str(self.root)!r})"

    def _area(self, user_id: str) -> Area:
        return Area(self.root / validate_id(user_id, "user_id"))

    def _own_dir(self, user_id: str, *parts: str) -> Path:
        """``{root}/{user_id}/{parts...}``, created as needed, never through a link out of the user's area."""
        user = self.root / validate_id(user_id, "user_id")
        try:
            user.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot make {user}: {exc}") from exc
        area = Area(user)
        return _make_dirs(area, Path(area.real), parts, f"a folder of user {user_id!r}")

    def _model_folder(self, user_id: str, model_name: str) -> Path | None:
        """The model's real folder inside the user's area, or None (missing, or a link out of the area)."""
        area = self._area(user_id)
        entry = area.resolve(self.root / user_id / "models" / validate_id(model_name, "model_name"))
        return Path(entry.real) if entry.is_dir and entry.real is not None else None

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
        validate_id(model_name, "model_name")
        models = self._own_dir(user_id, "models")
        final = models / model_name
        src_path = Path(src_path)
        if not src_path.is_file():
            raise StorageError(f"cannot publish model {model_name!r}: {src_path} does not exist")
        # Build the whole folder aside, then rename it into place: readers see all of it or nothing.
        tmp = models / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            # Each file fsync'd, then the folders: a crash after the rename never shows a truncated model.
            durable.copy_file(src_path, tmp / WEIGHTS)
            if plots:
                (tmp / "plots").mkdir()
            for plot in plots:
                durable.copy_file(plot, tmp / "plots" / Path(plot).name)
            record = {
                **(meta.to_record() if isinstance(meta, ModelProvenance) else dict(meta or {})),
                "name": model_name,
                "user_id": user_id,
                "labels": list(labels),
                "created_at": datetime.now(timezone.utc).isoformat(),
                "size_bytes": (tmp / WEIGHTS).stat().st_size,
                "plots": [f"plots/{Path(plot).name}" for plot in plots],
            }
            durable.write_text(tmp / META, json.dumps(record, indent=2))
            durable.fsync_dir(tmp)
            try:
                os.rename(tmp, final)
                durable.fsync_dir(models)
            except OSError:
                if os.path.lexists(final):
                    raise AlreadyExists(
                        f"user {user_id!r} already has a model named {model_name!r}: "
                        "delete it first or choose another name"
                    ) from None
                raise
        except OSError as exc:
            if exc.errno in durable.DISK_FULL:
                reason = durable.disk_full_reason(tmp, exc)
                raise StorageError(f"cannot publish model {model_name!r}: {reason}") from exc
            raise StorageError(f"cannot publish model {model_name!r} under {self.root}: {exc}") from exc
        except StorageError as exc:
            raise StorageError(f"cannot publish model {model_name!r}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get_model(user_id, model_name)

    def list_models(self, user_id: str) -> list[ModelMeta]:
        area = self._area(user_id)
        models = area.resolve(self.root / user_id / "models")
        if models.real is None or not models.is_dir:
            return []
        try:
            names = sorted(os.listdir(models.real))
        except OSError as exc:
            raise StorageError(f"cannot list the models of user {user_id!r}: {exc.strerror}") from None
        found = []
        for name in names:
            if name.startswith("."):
                continue
            entry = area.resolve(os.path.join(models.real, name))
            if entry.real is None or not entry.is_dir or not area.resolve(os.path.join(entry.real, META)).is_file:
                continue
            try:
                found.append(_read_meta(Path(entry.real), user_id=user_id, name=name))
            except (_Damaged, NotFound) as exc:
                log.warning("user %s: model %s is left out of the list: %s", user_id, name, exc)
        return found

    def get_model(self, user_id: str, model_name: str) -> ModelMeta:
        folder = self._model_folder(user_id, model_name)
        if folder is None or not Area(folder).resolve(folder / META).is_file:
            raise NotFound(f"user {user_id!r} has no model named {model_name!r}: see list_models()")
        try:
            return _read_meta(folder, user_id=user_id, name=model_name)
        except _Damaged as exc:
            raise StorageError(
                f"the metadata of model {model_name!r} is damaged ({exc}): delete the model and train it again"
            ) from None

    def delete_model(self, user_id: str, model_name: str) -> bool:
        folder = self.root / validate_id(user_id, "user_id") / "models" / validate_id(model_name, "model_name")
        trash = folder.parent / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)  # renames a link itself, never what it points at
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete model {model_name!r}: {exc}") from exc
        if trash.is_symlink():
            trash.unlink()
        else:
            shutil.rmtree(trash, ignore_errors=True)
        return True

    def get_model_path(self, user_id: str, model_name: str) -> Path:
        return self.get_model(user_id, model_name).path

    def add_export(self, user_id: str, model_name: str, key: str, src_path: Path) -> Path:
        validate_id(key, "export key")
        folder = self._model_folder(user_id, model_name)
        if folder is None:
            raise NotFound(f"model {model_name!r} is gone (deleted meanwhile?): see list_models()")
        src_path = Path(src_path)
        try:
            return self._add_export(folder, model_name, key, src_path)
        except OSError as exc:
            raise StorageError(f"cannot store the {key!r} export of model {model_name!r}: {exc}") from exc
        except _Damaged as exc:
            raise StorageError(
                f"the metadata of model {model_name!r} is damaged ({exc}): delete the model and train it again"
            ) from None

    def _add_export(self, folder: Path, model_name: str, key: str, src_path: Path) -> Path:
        with _locked(folder):
            meta = _load_meta(folder)
            exports = _mapping(meta.get("exports"))
            if (existing := _inside(folder, exports.get(key), allow_dir=True)) is not None:
                return existing
            final = (
                _make_dirs(Area(folder), folder, ("exports", key), f"a folder of model {model_name!r}") / src_path.name
            )
            os.replace(src_path, final)  # same volume: atomic, file or folder
            meta["exports"] = {**exports, key: str(final.relative_to(folder))}
            durable.write_text(folder / META, json.dumps(meta, indent=2))
        return final

    def predictions_dir(self, user_id: str, request_id: str) -> Path:
        return self._own_dir(user_id, "predictions", validate_id(request_id, "request_id"))

    def run_dir(self, user_id: str, run_id: str) -> Path:
        return self._own_dir(user_id, "runs", validate_id(run_id, "run_id"))


def _make_dirs(area: Area, start: Path, parts: Sequence[str], what: str) -> Path:
    """``start/parts...`` (``start`` a real folder in ``area``), each made if missing, none reached through a
    link out of the area; return the real path."""
    current = str(start)
    for part in parts:
        path = os.path.join(current, part)
        entry = area.resolve(path)
        if entry.real is None and not entry.blocked:
            try:
                os.mkdir(path)
            except FileExistsError:
                pass  # made meanwhile, by another worker: looked at again below
            except OSError as exc:
                raise StorageError(f"cannot make {path}: {exc}") from exc
            entry = area.resolve(path)
        if entry.real is None or not entry.is_dir:
            raise StorageError(f"{path} is not {what} (a link out of it, or a file): remove it, and it is made again")
        current = entry.real
    return Path(current)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a model's metadata, across processes sharing the volume."""
    try:
        fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        raise NotFound(f"model {folder.name!r} is gone (deleted meanwhile?): see list_models()") from None
    except OSError as exc:
        raise StorageError(f"cannot lock model {folder.name!r}: {exc.strerror}") from None
    with os.fdopen(fd, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _load_meta(folder: Path) -> dict[str, Any]:
    real = Area(folder).resolve(folder / META)
    if real.real is None or not real.is_file:
        raise NotFound(f"model {folder.name!r} is gone (deleted meanwhile?): see list_models()")
    try:
        data = json.loads(read_capped(real.real, _MAX_META_BYTES, META))
    except (UnreadableFile, ValueError, RecursionError) as exc:
        raise _Damaged(f"{META} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Damaged(f"{META} is not a JSON object")
    return data


def _inside(folder: Path, rel: object, *, allow_dir: bool = False) -> Path | None:
    """``folder/rel`` resolved, if ``rel`` is a relative path that stays in the model's folder; else None."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\0" in rel:
        return None
    entry = Area(folder).resolve(folder / rel)
    if entry.real is None or not (entry.is_file or (allow_dir and entry.is_dir)):
        return None
    return Path(entry.real)


def _read_meta(folder: Path, *, user_id: str, name: str) -> ModelMeta:
    """The model in ``folder`` (a real folder in ``user_id``'s area, found by ``name``): its owner and name
    are those, whatever ``meta.json`` claims; every path it lists must stay in the folder, or is left out."""
    data = _load_meta(folder)
    weights = _inside(folder, WEIGHTS)
    if weights is None:
        raise NotFound(f"user {user_id!r} has no model named {name!r}: see list_models()")
    task = data.get("task", "detect")
    if task not in KNOWN_TASKS:
        raise _Damaged(f"task {str(task)[:40]!r} is not one of {', '.join(sorted(KNOWN_TASKS))}")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise _Damaged("labels is not a list of names")
    try:
        created_at = datetime.fromisoformat(data["created_at"])
    except (KeyError, TypeError, ValueError):
        raise _Damaged("created_at is not a date") from None
    exports = _mapping(data.get("exports"))
    kept = {}
    for key, rel in exports.items():
        path = _inside(folder, rel, allow_dir=True) if _valid_key(key) else None
        if path is not None:
            kept[key] = str(path)
        elif not isinstance(rel, str) or os.path.isabs(rel) or ".." in Path(rel).parts:
            log.warning("user %s: model %s lists export %r outside its folder: ignored", user_id, name, key)
    plots = [str(p) for rel in _list(data.get("plots")) if (p := _inside(folder, rel)) is not None]
    size = data.get("size_bytes", 0)
    imgsz = data.get("imgsz")
    return ModelMeta(
        name=name,
        user_id=user_id,
        path=weights,
        task=task,
        labels=tuple(labels),
        created_at=created_at,
        size_bytes=size if type(size) is int and size >= 0 else 0,
        base_model=_text(data.get("base_model")),
        run_id=_text(data.get("run_id")),
        imgsz=imgsz if type(imgsz) is int and 0 < imgsz <= 65536 else None,
        metrics=_numbers(data.get("metrics")),
        exports=kept,
        trained_on=_text(data.get("trained_on")),
        plots=tuple(plots),
    )


def _valid_key(key: object) -> bool:
    try:
        validate_id(key, "export key")
    except InvalidInput:
        return False
    return True


def _mapping(value: object) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _numbers(value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 4096 else None
