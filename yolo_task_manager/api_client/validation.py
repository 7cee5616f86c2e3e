"""Checks the producer makes before a run is queued, without importing torch or ultralytics."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from yolo_task_manager.errors import InvalidInput, WeightsUnavailable
from yolo_task_manager.ids import resolve_inside
from yolo_task_manager.model_yaml import check_model_yaml
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
MAX_EPOCHS = 10_000
MAX_DURATION = 30 * 86400.0
"""A run may be given at most 30 days (``max_duration``, and ultralytics' ``time`` in hours)."""
_MAX_IMGSZ, _MAX_BATCH, _MAX_WORKERS, _MAX_LIST = 8192, 4096, 64, 1024
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,63}")
_CHOICES: dict[str, set[bool | str]] = {
    "amp": {True, False, "fp16", "bf16", "fp32"},
    "cache": {True, False, "ram", "disk"},
    "compile": {True, False, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"},
    "pretrained": {True, False},
}
"""Arguments ultralytics types ``bool | str``, and the strings allowed here: ``pretrained`` would load weights
from a path, so only the base model names weights."""
_PATHS = frozenset({"distill_model"})
"""Arguments that name a file ultralytics would load (a teacher model): not accepted from a tenant."""
log = logging.getLogger(__name__)


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
def _argument_types() -> dict[str, frozenset[str]]:
    """Each training argument's types as ``cfg/default.yaml`` annotates it: ``# (int | float)`` etc."""
    types = {}
    for line in (_ultralytics_dir() / "cfg" / "default.yaml").read_text().splitlines():
        if m := re.match(r"(\w+):[^#]*#\s*\(([^)]*)\)", line):
            words = re.findall(r"[a-z]+", m.group(2).replace("list[int]", "list"))
            types[m.group(1)] = frozenset(words)
    return types


@functools.cache
def _ultralytics_key_sets() -> dict[str, Any]:
    """ultralytics' own CFG_FRACTION_KEYS, CFG_INT_KEYS and CFG_INT_MIN, read from its source."""
    wanted = {"CFG_FRACTION_KEYS", "CFG_INT_KEYS", "CFG_INT_MIN"}
    found: dict[str, Any] = {"CFG_FRACTION_KEYS": frozenset(), "CFG_INT_KEYS": frozenset(), "CFG_INT_MIN": {}}
    for node in ast.parse((_ultralytics_dir() / "cfg" / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", "") in wanted:
            value = node.value
            if isinstance(value, ast.Call) and value.args:  # frozenset({...})
                value = value.args[0]
            try:
                literal = ast.literal_eval(value)
            except ValueError:
                continue
            name = node.targets[0].id  # type: ignore[attr-defined]
            found[name] = dict(literal) if isinstance(literal, dict) else frozenset(literal)
    return found


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


def resolve_base_model(base_model: str, pretrained_dir: Path, *, area: Path | None = None) -> tuple[str, str]:
    """Return (what ultralytics should load, task) for ``base_model``.

    A ``.pt`` name is looked up in ``pretrained_dir``; an absolute path is used as is, once its pickle is
    found to build nothing but layers and tensors (``pickles.check_checkpoint``); a model yaml
    (``yolov8n.yaml``) may also be one that ultralytics ships, and trains from scratch. A yaml file (in
    ``pretrained_dir`` or by path) is read as data and must name only ultralytics' layers
    (``model_yaml.check_model_yaml``).

    Args:
        area: the caller's own folder (``{root}/{user_id}``): an absolute path must then resolve inside it
            (or ``pretrained_dir``) before anything is read, and one that does not reads as a missing file.

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
    if path.is_absolute() and area is not None:
        # Nothing of another user's is opened, so no message can say anything about it.
        inside = resolve_inside(path, area) or resolve_inside(path, pretrained_dir)
        local = inside if inside is not None else Path(os.devnull) / path.name
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        if local.is_file():
            check_model_yaml(local)
            return str(local), _task_from_name(path.name)
        unscaled = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path.stem) + path.suffix
        if not path.is_absolute() and (path.name in _builtin_yamls() or unscaled in _builtin_yamls()):
            return path.name, _task_from_name(path.name)
        _note_legacy(path, pretrained_dir)
        raise InvalidInput(f"unknown model yaml {base_model!r}: put it in {pretrained_dir} or pass an absolute path")
    if suffix != ".pt":
        raise InvalidInput(f"base_model {base_model!r} must be a .pt checkpoint or a model .yaml")
    if not local.is_file():
        _note_legacy(path, pretrained_dir)
        raise WeightsUnavailable(
            f"weights {base_model!r} are not on this machine: copy {path.name} into {(pretrained_dir / path).parent}/ "
            "(from a machine with internet access; this system never downloads weights), "
            "or train from scratch with a yaml such as 'yolov8n.yaml'"
        )
    return str(local), _checkpoint_task(local, pretrained_dir)


def _note_legacy(path: Path, pretrained_dir: Path) -> None:
    """Tell the operator (not the caller) when a file sits in the pretrained folder's old place."""
    if path.is_absolute() or pretrained_dir.parent.name != "_system":
        return
    legacy = pretrained_dir.parent.parent / "pretrained"
    if (legacy / path.name).is_file():
        log.warning(
            "%s is in %s, which is no longer read: the operator's folder is now %s (move it there: "
            "mkdir -p %s && mv %s/* %s/)", path.name, legacy, pretrained_dir, pretrained_dir, legacy, pretrained_dir,
        )  # fmt: skip


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
    """``epochs`` if it is an integer from 1 to ``MAX_EPOCHS``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
        raise InvalidInput(f"epochs must be a positive integer up to {MAX_EPOCHS}, got {_shown(epochs)}")
    return epochs


def validate_hyp(hyp: dict[str, Any]) -> dict[str, Any]:
    """Check extra training arguments against ultralytics' own list, types and bounds.

    Raises:
        InvalidInput: an unknown or reserved argument, a value of the wrong type (sets, bytes, NaN...), a value
            out of bounds (imgsz 32..8192, batch -1, 1..4096 or a fraction, workers 0..64), or a path.
    """
    defaults, types = training_defaults(), _argument_types()
    for key, value in hyp.items():
        if key in RESERVED:
            raise InvalidInput(f"training argument {key!r} is set by yolo-task-manager and cannot be passed")
        if key not in defaults:
            close = difflib.get_close_matches(str(key), [str(k) for k in defaults], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidInput(f"unknown training argument {_shown(key)}{hint}")
        if key in _PATHS and value is not None:
            raise InvalidInput(f"training argument {key!r} names a file to load, which a run cannot do: leave it out")
        kinds = types.get(key) or _kinds_of(defaults[key])
        if problem := _value_problem(key, value, kinds):
            raise InvalidInput(f"training argument {key!r} {problem}, got {_shown(value)}")
    imgsz = hyp.get("imgsz", 640)
    if isinstance(imgsz, int) and imgsz < 32:
        raise InvalidInput(f"imgsz must be at least 32, got {imgsz}")
    return dict(hyp)


def _kinds_of(default: object) -> frozenset[str]:
    if isinstance(default, bool):
        return frozenset({"bool"})
    if isinstance(default, (int, float)):
        return frozenset({"int", "float"})
    return frozenset({"str", "optional"}) if default is None or isinstance(default, str) else frozenset()


def _value_problem(key: str, value: object, kinds: frozenset[str]) -> str | None:
    """Why ``value`` cannot be ``key``, or None."""
    if value is None:
        return None if "optional" in kinds else "must not be None"
    if key in _CHOICES:
        allowed = _CHOICES[key]
        ok = isinstance(value, (bool, str)) and value in allowed and (isinstance(value, bool) or "str" in kinds)
        return None if ok else f"must be one of {', '.join(repr(c) for c in sorted(allowed, key=str))}"
    if isinstance(value, bool):
        return None if "bool" in kinds else "must be " + " or ".join(sorted(kinds - {"optional"}))
    if "bool" in kinds and kinds <= {"bool", "optional"}:
        return "must be true or false"
    sets = _ultralytics_key_sets()
    if isinstance(value, (int, float)):
        if not _finite(value):
            return "must be a finite number"
        if isinstance(value, float) and not kinds & {"float"}:
            return "must be an integer" if "int" in kinds else "must be " + " or ".join(sorted(kinds - {"optional"}))
        if not kinds & {"int", "float"}:
            return "must be " + " or ".join(sorted(kinds - {"optional"}))
        return _bound_problem(key, value, sets)
    if isinstance(value, (list, tuple)):
        if not kinds & {"list", "tuple"}:
            return "must be a number" if kinds & {"int", "float"} else "must not be a list"
        if not 0 < len(value) <= _MAX_LIST:
            return f"must be a list of 1 to {_MAX_LIST} values"
        for item in value:
            if isinstance(item, bool) or not (
                (isinstance(item, (int, float)) and _finite(item))
                or (isinstance(item, str) and key == "freeze" and _WORD.fullmatch(item))
            ):
                return "must be a list of finite numbers"
            if key == "imgsz" and isinstance(item, (int, float)) and (problem := _bound_problem(key, item, sets)):
                return problem
        return None
    if isinstance(value, str):
        if "str" not in kinds:
            return "must be " + " or ".join(sorted(kinds - {"optional"}))
        return None if _WORD.fullmatch(value) else "must be a plain word (letters, digits, '._:+-'), not a path"
    return f"must be {' or '.join(sorted(kinds - {'optional'}))}, not a {type(value).__name__}"


def _finite(value: float) -> bool:
    """Finite and within a float's range (ultralytics computes with these values as floats)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _bound_problem(key: str, value: float, sets: dict[str, Any]) -> str | None:
    if key == "imgsz":
        return None if 32 <= value <= _MAX_IMGSZ and float(value).is_integer() else f"must be 32 to {_MAX_IMGSZ}"
    if key == "batch":
        if value == -1 or (isinstance(value, float) and 0 < value < 1):
            return None
        ok = float(value).is_integer() and 1 <= value <= _MAX_BATCH
        return None if ok else f"must be -1 (AutoBatch), a fraction of GPU memory in (0, 1), or 1 to {_MAX_BATCH}"
    if key == "workers":
        return None if type(value) is int and 0 <= value <= _MAX_WORKERS else f"must be 0 to {_MAX_WORKERS}"
    if key == "time":
        hours = MAX_DURATION / 3600
        return None if 0 < value <= hours else f"must be more than 0 and at most {hours:g} hours"
    if key in sets["CFG_FRACTION_KEYS"] and key != "fraction" and not 0 <= value <= 1:
        return "must be between 0 and 1"
    if key in sets["CFG_INT_MIN"] and value < sets["CFG_INT_MIN"][key]:
        return f"must be at least {sets['CFG_INT_MIN'][key]}"
    if key in sets["CFG_INT_KEYS"] and not float(value).is_integer():
        return "must be an integer"
    if abs(value) > 2**31:
        return "is out of range"
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


_DURATION = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([smhd]?)\s*")


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds from 90, "90s", "30m", "2h" or "1d" (at most 30 days); None stays None."""
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(
            f"max_duration must be a positive number of seconds or like '30m', '2h', got {_shown(value)}"
        )
    if seconds > MAX_DURATION:
        raise InvalidInput(f"max_duration may be at most 30 days ('30d'), got {_shown(value)}")
    return seconds
