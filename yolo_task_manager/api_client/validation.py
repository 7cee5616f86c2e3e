"""Checks the producer makes before a run is queued, without importing torch or ultralytics."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

from yolo_task_manager.errors import InvalidInput, WeightsUnavailable
from yolo_task_manager.pickles import check_checkpoint, read_pickle

__all__ = ["check_task_fits", "parse_duration", "resolve_base_model", "validate_epochs", "validate_hyp"]

# Set by the manager, or meaningless for one run; passing them would break isolation or resume.
RESERVED = frozenset(
    {"data", "epochs", "project", "name", "exist_ok", "resume", "model", "save_dir", "device", "save", "mode", "task",
     "cfg", "tracker", "source"}
)  # fmt: skip
_TASK_OF_CLASS = {
    b"ClassificationModel": "classify",
    b"SegmentationModel": "segment",
    b"PoseModel": "pose",
    b"OBBModel": "obb",
    b"DetectionModel": "detect",
}
_TASK_OF_MARKER = {"cls": "classify", "seg": "segment", "pose": "pose", "obb": "obb"}


def _ultralytics_dir() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("ultralytics is not installed here: `pip install yolo-task-manager` installs it")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def training_defaults() -> dict[str, Any]:
    """ultralytics' default training arguments, read from its ``cfg/default.yaml``."""
    return dict(yaml.safe_load((_ultralytics_dir() / "cfg" / "default.yaml").read_text()))


@functools.cache
def _builtin_yamls() -> frozenset[str]:
    return frozenset(p.name for p in (_ultralytics_dir() / "cfg" / "models").rglob("*.yaml"))


def _task_from_name(name: str) -> str:
    # The marker may be followed by a variant: yolov8n-seg-p6, yolov8-cls-resnet50.
    m = re.search(r"-(cls|seg|pose|obb)(?:-|$)", Path(name).stem)
    return _TASK_OF_MARKER[m.group(1)] if m else "detect"


def _checkpoint_task(path: Path, pretrained_dir: Path) -> str:
    """The task of an ultralytics checkpoint; reject files ultralytics 8 cannot load, or should not."""
    data = read_pickle(path)
    if b"ultralytics" not in data and b"models.yolo" in data:
        raise InvalidInput(
            f"{path} is a legacy YOLOv5 checkpoint (models.yolo.Model), which ultralytics 8 cannot load: "
            "use a YOLOv8/YOLO11 checkpoint, or a model yaml such as yolov8n.yaml to train from scratch"
        )
    if path.parent != pretrained_dir:  # the operator's folder holds files they vouch for
        check_checkpoint(path, data, trusted_dir=pretrained_dir)
    return next((task for marker, task in _TASK_OF_CLASS.items() if marker in data), "detect")


def resolve_base_model(base_model: str, pretrained_dir: Path) -> tuple[str, str]:
    """Return (what ultralytics should load, task) for ``base_model``.

    A ``.pt`` name is looked up in ``pretrained_dir``; an absolute path is used as is, once its pickle is
    found to build nothing but layers and tensors (``pickles.check_checkpoint``); a model yaml
    (``yolov8n.yaml``) may also be one that ultralytics ships, and trains from scratch.

    Raises:
        WeightsUnavailable: the weights file is not on this machine.
        InvalidInput: the name is unsafe, unknown, or the file is not a loadable checkpoint.
    """
    if not isinstance(base_model, str) or not base_model:
        raise InvalidInput(f"base_model must be a file name or an absolute path, got {base_model!r}")
    path = Path(base_model)
    if not path.is_absolute() and (len(path.parts) != 1 or base_model.startswith(".")):
        raise InvalidInput(
            f"base_model {base_model!r} must be a plain file name (looked up in {pretrained_dir}) or an absolute path"
        )
    local = path if path.is_absolute() else pretrained_dir / path
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        if local.is_file():
            return str(local), _task_from_name(path.name)
        unscaled = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path.stem) + path.suffix
        if not path.is_absolute() and (path.name in _builtin_yamls() or unscaled in _builtin_yamls()):
            return path.name, _task_from_name(path.name)
        raise InvalidInput(f"unknown model yaml {base_model!r}: put it in {pretrained_dir} or pass an absolute path")
    if suffix != ".pt":
        raise InvalidInput(f"base_model {base_model!r} must be a .pt checkpoint or a model .yaml")
    if not local.is_file():
        raise WeightsUnavailable(
            f"weights {base_model!r} are not on this machine: copy {path.name} into {local.parent}/ "
            "(from a machine with internet access; this system never downloads weights), "
            "or train from scratch with a yaml such as 'yolov8n.yaml'"
        )
    return str(local), _checkpoint_task(local, pretrained_dir)


def check_task_fits(model_task: str, dataset_task: str, base_model: str) -> None:
    """Raise when the model cannot train on the dataset (a detector on class folders, and so on)."""
    if model_task == dataset_task:
        return
    compatible = {"detect": {"detect", "segment", "obb"}, "segment": {"segment"}}
    if dataset_task in compatible.get(model_task, set()):
        return
    raise InvalidInput(
        f"base_model {base_model!r} is a {model_task} model but the dataset is a {dataset_task} dataset: "
        f"pick a {dataset_task} model (for example a '-cls', '-seg', '-pose' or '-obb' one) or another dataset"
    )


def validate_epochs(epochs: object) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidInput(f"epochs must be a positive integer, got {epochs!r}")
    return epochs


def validate_hyp(hyp: dict[str, Any]) -> dict[str, Any]:
    """Check extra training arguments against ultralytics' own list and types."""
    defaults = training_defaults()
    for key, value in hyp.items():
        if key in RESERVED:
            raise InvalidInput(f"training argument {key!r} is set by yolo-task-manager and cannot be passed")
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidInput(f"unknown training argument {key!r}{hint}")
        default = defaults[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise InvalidInput(f"training argument {key!r} must be true or false, got {value!r}")
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float, list, tuple))):
            raise InvalidInput(f"training argument {key!r} must be a number, got {value!r}")
    imgsz = hyp.get("imgsz", 640)
    if isinstance(imgsz, int) and imgsz < 32:
        raise InvalidInput(f"imgsz must be at least 32, got {imgsz}")
    return dict(hyp)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds from 90, "90s", "30m", "2h" or "1d"; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise InvalidInput(f"max_duration must be a positive number of seconds or like '30m', '2h', got {value!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
