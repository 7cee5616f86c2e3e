"""Check a user's dataset folder before a run is queued, the way ultralytics will read it.

Runs in the light producer process, so it never imports torch or ultralytics.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolo_task_manager.errors import InvalidInput

__all__ = ["IMAGE_SUFFIXES", "DatasetInfo", "inspect_dataset", "write_training_data"]

IMAGE_SUFFIXES = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"})
_Kpt = tuple[int, int] | None  # kpt_shape from data.yaml: (keypoints, 2 or 3 values each)
_MAX_SHOWN = 5
_TOLERANCE = 0.01  # ultralytics 8.4 accepts coordinates up to 1% outside [0, 1]
_EXPECTED_FIELDS = {
    "detect": "5 (class x_center y_center width height)",
    "segment": "an odd count of at least 7 (class x1 y1 x2 y2 x3 y3 ...), never mixed with 5-field boxes",
    "obb": "9 (class x1 y1 x2 y2 x3 y3 x4 y4)",
}


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What training needs to know about a dataset that passed every check."""

    root: Path
    task: str
    names: tuple[str, ...]
    train_images: int
    val_images: int
    data_yaml: Path | None


class _Findings:
    """Problems of one kind: the first few examples and how many there are."""

    def __init__(self, what: str, fix: str) -> None:
        self.what, self.fix = what, fix
        self.examples: list[str] = []
        self.count = 0

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < _MAX_SHOWN:
            self.examples.append(example)

    def message(self) -> str | None:
        if not self.count:
            return None
        more = f"; and {self.count - _MAX_SHOWN} more" if self.count > _MAX_SHOWN else ""
        return f"{self.what} ({self.count}): {'; '.join(self.examples)}{more}: {self.fix}"


def inspect_dataset(dataset_dir: str | Path) -> DatasetInfo:
    """Validate a dataset folder and describe it.

    Raises:
        InvalidInput: a missing folder, an unknown layout, or bad labels or images, naming the files.
    """
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise InvalidInput(f"dataset folder {root} does not exist: check the path or copy the dataset there")
    if not root.is_dir():
        raise InvalidInput(f"dataset {root} is not a folder: pass the folder that holds data.yaml or train/")
    root = root.resolve()
    if _is_classification(root / "train"):
        return _inspect_classification(root)
    yaml_file = next((root / n for n in ("data.yaml", "data.yml") if (root / n).is_file()), None)
    if yaml_file is None:
        raise InvalidInput(
            f"{root} has no data.yaml and no class folders under train/: add a data.yaml (YOLO detect, "
            "segment, pose or obb: names, train, val) or lay images out as train/<class>/ and val/<class>/"
        )
    return _inspect_yolo(yaml_file)


def write_training_data(info: DatasetInfo, dest_dir: Path) -> str:
    """Return ultralytics' ``data=`` argument, writing ``dest_dir/data.yaml`` for a YOLO dataset.

    The copy pins ``path:`` to the absolute root (ultralytics would otherwise resolve a relative one
    against its own datasets folder) and drops ``download:`` so training never tries the network.
    """
    if info.data_yaml is None:
        return str(info.root)
    data = _load_yaml(info.data_yaml)
    content = {"path": str(info.root), **{k: v for k, v in data.items() if k not in ("path", "download")}}
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / "data.yaml"
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".data.", suffix=".yaml.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(content, f, sort_keys=False, allow_unicode=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


def _is_image(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_SUFFIXES


def _is_classification(train: Path) -> bool:
    # train/images/ (Roboflow), loose images or a.txt labels beside a.jpg images all mean a YOLO layout.
    dirs = [c for c in train.iterdir() if c.is_dir()] if train.is_dir() else []
    if not dirs or {d.name for d in dirs} & {"images", "labels"} or any(map(_is_image, os.listdir(train))):
        return False
    files = [f for d in dirs for f in _walk_files(d, skip_hidden=False)]
    stems = {f.rpartition(".")[0] for f in files if _is_image(f)}
    return not any(f.endswith(".txt") and f[:-4] in stems for f in files)


def _walk_files(folder: Path, *, skip_hidden: bool) -> Iterator[str]:
    """Yield file paths under ``folder``, following links but never a folder twice."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        if skip_hidden:  # ultralytics lists folders with glob('**/*.*'), which skips dot names
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            filenames = [f for f in filenames if not f.startswith(".")]
        dirnames.sort()
        yield from (os.path.join(dirpath, f) for f in sorted(filenames))


def _inspect_classification(root: Path) -> DatasetInfo:
    # The same fallback order as ultralytics' check_cls_dataset.
    val = next((root / n for n in ("val", "validation", "valid", "test") if (root / n).is_dir()), None)
    if val is None:
        raise InvalidInput(f"{root} has train/ but no val/ (or test/): add val/<class>/ folders of images")
    # Like ultralytics (torchvision ImageFolder), every folder in train/ is a class, hidden ones too.
    train = root / "train"
    names = tuple(sorted(d.name for d in train.iterdir() if d.is_dir()))
    if len(names) < 2:
        raise InvalidInput(f"{train} has {len(names)} class folder: add a folder of images per class")
    if extra := sorted(d.name for d in val.iterdir() if d.is_dir() and d.name not in names):
        raise InvalidInput(f"{val} has classes train/ lacks ({', '.join(extra)}): rename or remove them")
    empty = _Findings("class folders without images", "add images to these folders or remove them")
    images: dict[str, list[str]] = {}
    for split in (train, val):
        images[split.name] = []
        for cls_dir in sorted(d for d in split.iterdir() if d.is_dir()):
            found = [f for f in _walk_files(cls_dir, skip_hidden=False) if _is_image(f)]
            if not found:
                empty.add(_show(cls_dir, root))
            images[split.name] += found
    _raise_if(root, [empty, _verify_images([p for ps in images.values() for p in ps], root)])
    n_train, n_val = len(images["train"]), len(images[val.name])
    return DatasetInfo(root=root, task="classify", names=names, train_images=n_train, val_images=n_val, data_yaml=None)


def _load_yaml(yaml_file: Path) -> dict[Any, Any]:
    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{yaml_file} is not readable YAML ({exc}): fix the file") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{yaml_file} must be a mapping of names, train and val: fix its top level")
    return data


def _read_names(data: dict[Any, Any], yaml_file: Path) -> tuple[str, ...]:
    names = data.get("names")
    if isinstance(names, dict):  # ultralytics accepts {0: a, 1: b} with int or str keys
        by_id = {str(k): v for k, v in names.items()}
        if set(by_id) != {str(i) for i in range(len(by_id))}:
            raise InvalidInput(f"{yaml_file}: names keys must be 0..{len(by_id) - 1}: number classes from 0")
        names = [by_id[str(i)] for i in range(len(by_id))]
    if not isinstance(names, list) or not names:
        raise InvalidInput(f"{yaml_file} has no names: list the class names, e.g. names: [cat, dog]")
    result = tuple(str(n) for n in names)
    nc = data.get("nc")
    if nc is not None and nc != len(result):
        raise InvalidInput(f"{yaml_file}: nc is {nc} but names lists {len(result)} classes: make them agree")
    return result


def _read_kpt_shape(data: dict[Any, Any], yaml_file: Path) -> _Kpt:
    shape = data.get("kpt_shape")
    if shape is None:
        return None
    ok = isinstance(shape, list) and len(shape) == 2 and all(isinstance(x, int) for x in shape)
    if not ok or shape[0] < 1 or shape[1] not in (2, 3):
        raise InvalidInput(f"{yaml_file}: kpt_shape must be [keypoints, 2 or 3], e.g. [17, 3], not {shape!r}")
    return shape[0], shape[1]


def _data_root(data: dict[Any, Any], yaml_file: Path) -> Path:
    path = data.get("path")
    return (yaml_file.parent / os.path.expanduser(str(path))).resolve() if path else yaml_file.parent


def _missing(what: str, yaml_file: Path, data: dict[Any, Any]) -> InvalidInput:
    if data.get("download"):
        return InvalidInput(
            f"{what} does not exist, and {yaml_file.name} would download it, but this system is offline: "
            "download the data on a connected machine and copy it here"
        )
    return InvalidInput(f"{what} does not exist: copy the images there or fix {yaml_file.name}")


def _split_images(data: dict[Any, Any], key: str, root: Path, yaml_file: Path, bad: _Findings) -> list[str]:
    spec = data.get(key)
    if not spec or not isinstance(spec, (str, list)):
        raise InvalidInput(f"{yaml_file} has no {key}: give a folder, a .txt image list or a list of those")
    images: list[str] = []
    for entry in spec if isinstance(spec, list) else [spec]:
        where = (root / str(entry)).resolve()
        # ultralytics retries a missing "../x" as "x": Roboflow exports write train: ../train/images.
        if isinstance(spec, str) and not where.exists() and spec.startswith("../"):
            where = (root / spec[3:]).resolve()
        if where.is_dir():
            images += [f for f in _walk_files(where, skip_hidden=True) if _is_image(f)]
        elif where.is_file() and where.suffix == ".txt":
            images += _listed_images(where, root, bad)
        elif where.exists():
            raise InvalidInput(f"{key}: {where} must be a folder or a .txt list of image paths")
        else:
            raise _missing(f"{key}: {entry} (resolved to {where})", yaml_file, data)
    if not images:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise InvalidInput(bad.message() or f"{key}: {spec} (under {root}) holds no {kinds} images: add some")
    return sorted(images)


def _listed_images(list_file: Path, root: Path, bad: _Findings) -> list[str]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"image list {list_file} cannot be read ({exc}): save it as UTF-8 text") from exc
    images = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        # ultralytics reads "./x" relative to the list file, and any other relative line from its cwd.
        full = os.path.join(list_file.parent, line[2:]) if line.startswith("./") else line
        if not _is_image(line):
            continue
        if not os.path.isabs(full):
            bad.add(f"{_show(list_file, root)} line {n}: {line!r} must be absolute or start with './'")
        elif not os.path.isfile(full):
            bad.add(f"{_show(list_file, root)} line {n}: {full} does not exist")
        else:
            images.append(full)
    return images


def _inspect_yolo(yaml_file: Path) -> DatasetInfo:
    data = _load_yaml(yaml_file)
    names = _read_names(data, yaml_file)
    kpt_shape = _read_kpt_shape(data, yaml_file)
    root = _data_root(data, yaml_file)
    if not root.is_dir():
        raise _missing(f"dataset root path: {data.get('path')} (resolved to {root})", yaml_file, data)
    if "val" not in data and "validation" in data:
        data["val"] = data["validation"]  # ultralytics renames this key the same way
    listed = _Findings("wrong image list entries", "fix these lines or remove them")
    train = _split_images(data, "train", root, yaml_file, listed)
    val = _split_images(data, "val", root, yaml_file, listed)
    everything = sorted(set(train) | set(val))
    task, labels = _check_labels(everything, root, len(names), kpt_shape)
    if not any(os.path.isfile(_label_path(p)) for p in train):
        raise InvalidInput(
            f"dataset {root}: no train image has a label file, e.g. {_show(train[0], root)} needs "
            f"{_show(_label_path(train[0]), root)}: put the labels/ folder beside images/"
        )
    _raise_if(root, [listed, labels, _verify_images(everything, root)])
    return DatasetInfo(
        root=root, task=task, names=names, train_images=len(train), val_images=len(val), data_yaml=yaml_file
    )


def _label_path(image: str) -> str:
    # ultralytics' img2label_paths: the last /images/ becomes /labels/, the suffix becomes .txt.
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def _check_row(parts: list[str], nc: int, kpt_shape: _Kpt) -> str | None:
    """Say what is wrong with one label row, or None; the bounds are those ultralytics enforces."""
    if kpt_shape and len(parts) != 5 + kpt_shape[0] * kpt_shape[1]:
        want = 5 + kpt_shape[0] * kpt_shape[1]
        return f"{len(parts)} fields, a pose label with kpt_shape {list(kpt_shape)} needs {want}"
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return f"non-numeric field in {' '.join(parts)!r}"
    if not all(math.isfinite(v) for v in values):
        return f"non-finite number in {' '.join(parts)!r}"
    if not values[0].is_integer() or not 0 <= values[0] < nc:
        return f"class id {parts[0]} is not an integer in 0..{nc - 1}"
    box = values[1:5]
    if len(values) > 6 and not kpt_shape:  # polygon corners may leave the image (obb); their box may not
        xs, ys = values[1::2], values[2::2]
        box = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    # For pose, ultralytics bounds only the keypoints' x and y from above.
    points = [v for i, v in enumerate(values[5:]) if i % kpt_shape[1] < 2] if kpt_shape else box
    if max(points, default=0) > 1 + _TOLERANCE:
        return f"coordinate {max(points):g} is above 1: divide pixel values by the image size"
    low = min([*box, *values[5:]] if kpt_shape else box)
    if low < 0 and (low < -_TOLERANCE or min(box[2:4], default=0) < 0):
        return f"negative value {low:g}: coordinates are fractions of the image size, from 0 to 1"
    return None


def _guess_task(seen: set[int], kpt_shape: _Kpt) -> str:
    if kpt_shape:
        return "pose"
    return "obb" if seen == {9} else "segment" if max(seen, default=0) >= 7 else "detect"


def _fields_ok(task: str, n: int) -> bool:
    return n >= 7 and n % 2 == 1 if task == "segment" else n == {"detect": 5, "obb": 9}.get(task, n)


def _read_label(label: str, nc: int, kpt_shape: _Kpt) -> dict[int, int] | str:
    """Map each field count to its first line number, or say what is wrong with the file."""
    try:
        with open(label, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot be read as UTF-8 text ({exc})"
    counts: dict[int, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if problem := _check_row(parts, nc, kpt_shape):
            return f"line {n}: {problem}"
        counts.setdefault(len(parts), n)
    return counts


def _check_labels(images: list[str], root: Path, nc: int, kpt_shape: _Kpt) -> tuple[str, _Findings]:
    """Parse every label file; return the task guess and the bad files."""
    bad = _Findings("invalid label files", "fix or remove these label files")
    per_file: list[tuple[str, dict[int, int]]] = []
    for image in images:
        label = _label_path(image)
        if not os.path.isfile(label):
            continue  # an image without a label file is a background image
        result = _read_label(label, nc, kpt_shape)
        if isinstance(result, str):
            bad.add(f"{_show(label, root)} {result}")
        else:
            per_file.append((label, result))
    task = _guess_task({n for _, counts in per_file for n in counts}, kpt_shape)
    for label, counts in per_file:  # pose field counts were checked row by row
        if wrong := sorted((line, n) for n, line in counts.items() if not _fields_ok(task, n)):
            line, n = wrong[0]
            bad.add(f"{_show(label, root)} line {line}: {n} fields, {task} needs {_EXPECTED_FIELDS[task]}")
    return task, bad


def _verify_images(images: list[str], root: Path) -> _Findings:
    from PIL import Image  # Pillow only loads when a dataset is checked

    bad = _Findings("unreadable or corrupt images", "replace or delete these image files")
    for image in images:
        try:
            with Image.open(image) as im:
                im.verify()
                size, fmt = im.size, (im.format or "").lower()
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file, all the user's
            bad.add(f"{_show(image, root)} ({exc.__class__.__name__}: {exc})")
            continue
        if min(size) < 10:  # ultralytics drops such images
            bad.add(f"{_show(image, root)} is {size[0]}x{size[1]} pixels, under 10 a side")
        elif fmt not in IMAGE_SUFFIXES:
            bad.add(f"{_show(image, root)} is a {fmt.upper()} file: save it as JPEG or PNG")
    return bad


def _show(path: str | Path, root: Path) -> str:
    """A path as the user knows it: relative to the dataset root when inside it."""
    path = Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _raise_if(root: Path, findings: list[_Findings]) -> None:
    messages = [m for f in findings if (m := f.message())]
    if messages:
        raise InvalidInput(f"dataset {root}: " + "\n".join(messages))
