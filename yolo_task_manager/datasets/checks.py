"""Check a user's dataset folder before a run is queued, the way ultralytics will read it.

Every path the dataset names (``path``, ``train``, ``val``, ``test``, image lists and their lines, links
anywhere in its folders) must stay inside the tenant's area; one that leaves it is refused exactly like one
that does not exist. Runs in the light producer process, so it never imports torch or ultralytics.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo_task_manager import durable
from yolo_task_manager.datasets.files import (
    MAX_DATA_YAML_BYTES,
    MAX_IMAGE_LIST_BYTES,
    UnreadableFile,
    excerpt,
    load_yaml,
    read_capped,
    shown,
)
from yolo_task_manager.datasets.images import verify_images
from yolo_task_manager.datasets.labels import EXPECTED_FIELDS, Kpt, fields_ok, guess_task, read_label
from yolo_task_manager.datasets.listing import IMAGE_SUFFIXES, Findings, Listing, is_image, list_files
from yolo_task_manager.errors import InvalidInput, StorageError
from yolo_task_manager.ids import Area

__all__ = ["IMAGE_SUFFIXES", "DatasetInfo", "inspect_dataset", "write_training_data"]

_SPLITS = ("train", "val", "test")
_DROPPED = frozenset({"path", "download", "yaml_file", "validation", "minival"})
"""data.yaml keys never passed on: ``path`` is pinned, ``download`` would run code or fetch, the others are
ultralytics' own or name paths this check does not follow."""
_Image = tuple[str, str]  # (the path as ultralytics will see it, the real file inside the area)


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What training needs to know about a dataset that passed every check."""

    root: Path
    task: str
    names: tuple[str, ...]
    train_images: int
    val_images: int
    data_yaml: Path | None
    training_data: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """The data.yaml as checked, with ``path`` and every split resolved to the folders or lists checked."""


def inspect_dataset(dataset_dir: str | Path, *, area: str | Path | None = None) -> DatasetInfo:
    """Validate a dataset folder and describe it.

    Args:
        area: the folder everything the dataset names must stay inside (the tenant's ``{root}/{user_id}``);
            the dataset folder itself when None.

    Raises:
        InvalidInput: a missing folder, an unknown layout, a path or link leading out of ``area``, or bad
            labels or images, naming the files.
    """
    given = Path(dataset_dir).expanduser()
    # Without an area the dataset folder bounds itself (its parent only while it is not a folder: to say so).
    where = Area(area if area is not None else given if given.is_dir() else given.parent)
    entry = where.resolve(os.path.abspath(given))
    if entry.real is None:
        raise InvalidInput(f"dataset folder {shown(given)} does not exist: check the path or copy the dataset there")
    if not entry.is_dir:
        raise InvalidInput(f"dataset {shown(given)} is not a folder: pass the folder that holds data.yaml or train/")
    root = Path(entry.real)
    found = _Finder(where, root)
    classes = found.classification_layout()
    found.raise_if([found.listing.out])  # a link out of the area is named before anything it hides
    if classes is not None:
        return found.classification(*classes)
    yaml_file = next((r for n in ("data.yaml", "data.yml") if (r := found.file(root / n)) is not None), None)
    if yaml_file is None:
        raise InvalidInput(
            f"{shown(root)} has no data.yaml and no class folders under train/: add a data.yaml (YOLO detect, "
            "segment, pose or obb: names, train, val) or lay images out as train/<class>/ and val/<class>/"
        )
    return found.yolo(Path(yaml_file))


def write_training_data(info: DatasetInfo, dest_dir: Path) -> str:
    """Return ultralytics' ``data=`` argument, writing ``dest_dir/data.yaml`` for a YOLO dataset.

    The copy holds what was checked: ``path:`` pinned to the absolute root, each split as the absolute folder
    or list that was checked (so ultralytics never falls back to another one), and no ``download:``.
    """
    if info.data_yaml is None:
        return str(info.root)
    if info.training_data is None:
        raise InvalidInput("this DatasetInfo was not made by inspect_dataset: inspect the dataset again")
    target = dest_dir / "data.yaml"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".data.", suffix=".yaml.tmp")
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(info.training_data, f, sort_keys=False, allow_unicode=True)
            f.flush()
            os.fsync(f.fileno())
        durable.replace(Path(tmp), target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in durable.DISK_FULL:
            raise StorageError(durable.disk_full_reason(target, exc)) from None
        raise StorageError(f"cannot write {target}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


class _Finder:
    """Looks at one dataset through its area: every lookup resolves links without leaving it."""

    def __init__(self, area: Area, root: Path) -> None:
        self.area, self.root = area, root
        self.listing = Listing(area, root)

    def file(self, path: Path) -> str | None:
        entry = self.area.resolve(path)
        return entry.real if entry.is_file else None

    def folder(self, path: Path) -> str | None:
        entry = self.area.resolve(path)
        return entry.real if entry.is_dir else None

    # -- classification ---------------------------------------------------------------------------

    def classification_layout(self) -> tuple[str, dict[str, list[_Image]]] | None:
        """train/'s class folders and their images, if the dataset is laid out for classification."""
        train = self.folder(self.root / "train")
        if train is None:
            return None
        top = list_files(self.listing, str(self.root / "train"), train, skip_hidden=False, depth=1)
        # train/images/ (Roboflow), loose images or a.txt labels beside a.jpg images all mean a YOLO layout.
        if not top.dirs or set(top.dirs) & {"images", "labels"} or any(map(is_image, top.names)):
            return None
        per_class = {
            Path(lexical).name: list_files(self.listing, lexical, real, skip_hidden=False)
            for lexical, real in top.dir_paths
        }
        files = [path for listed in per_class.values() for path, _ in listed.files]
        stems = {f.rpartition(".")[0] for f in files if is_image(f)}
        if any(f.endswith(".txt") and f[:-4] in stems for f in files):
            return None
        return train, {name: [p for p in listed.files if is_image(p[0])] for name, listed in per_class.items()}

    def classification(self, train: str, train_images: dict[str, list[_Image]]) -> DatasetInfo:
        root = self.root
        # The same fallback order as ultralytics' check_cls_dataset.
        val_name, val = next(
            ((n, r) for n in ("val", "validation", "valid", "test") if (r := self.folder(root / n)) is not None),
            (None, None),
        )
        if val is None or val_name is None:
            raise InvalidInput(f"{shown(root)} has train/ but no val/ (or test/): add val/<class>/ folders of images")
        # Like ultralytics (torchvision ImageFolder), every folder in train/ is a class, hidden ones too.
        names = tuple(sorted(train_images))
        if len(names) < 2:
            raise InvalidInput(
                f"{shown(root / 'train')} has {len(names)} class folder: add a folder of images per class"
            )
        top = list_files(self.listing, str(root / val_name), val, skip_hidden=False, depth=1)
        val_images: dict[str, list[_Image]] = {}
        for lexical, real in top.dir_paths:
            listed = list_files(self.listing, lexical, real, skip_hidden=False)
            val_images[Path(lexical).name] = [p for p in listed.files if is_image(p[0])]
        if extra := sorted(n for n in val_images if n not in names):
            raise InvalidInput(
                f"{shown(root / val_name)} has classes train/ lacks ({', '.join(shown(n) for n in extra)}): "
                "rename or remove them"
            )
        empty = Findings("class folders without images", "add images to these folders or remove them")
        for split, classes in (("train", train_images), (val_name, val_images)):
            for name in sorted(classes):
                if not classes[name]:
                    empty.add(shown(root / split / name, root))
        everything = [p for classes in (train_images, val_images) for ps in classes.values() for p in ps]
        self.raise_if([empty, *self.listing.findings(), verify_images(everything, root)])
        return DatasetInfo(
            root=root,
            task="classify",
            names=names,
            train_images=sum(map(len, train_images.values())),
            val_images=sum(map(len, val_images.values())),
            data_yaml=None,
        )

    # -- YOLO ---------------------------------------------------------------------------------------

    def yolo(self, yaml_file: Path) -> DatasetInfo:
        data = self._load_yaml(yaml_file)
        names = _read_names(data, yaml_file)
        kpt_shape = _read_kpt_shape(data, yaml_file)
        root = self._data_root(data, yaml_file)
        if "val" not in data and "validation" in data:
            data["val"] = data["validation"]  # ultralytics renames this key the same way
        if (masks := data.get("masks_dir")) is not None and (not isinstance(masks, str) or not _plain_name(masks)):
            raise InvalidInput(f"{yaml_file.name}: masks_dir must be a folder name beside images/, like 'masks'")
        listed = Findings("wrong image list entries", "fix these lines or remove them")
        training: dict[str, Any] = {"path": str(root)}
        splits: dict[str, list[_Image]] = {}
        for key in _SPLITS:
            if key == "test" and not data.get("test"):
                continue
            training[key], splits[key] = self._split_images(data, key, root, yaml_file, listed)
        training.update((k, v) for k, v in data.items() if k not in _DROPPED and k not in training)
        everything = sorted({p for images in splits.values() for p in images})
        task, labels, labelled = self._check_labels(everything, root, len(names), kpt_shape)
        train = splits["train"]
        if not any(path in labelled for path, _ in train):
            raise InvalidInput(
                f"dataset {shown(root)}: no train image has a label file, e.g. {shown(train[0][0], root)} needs "
                f"{shown(_label_path(train[0][0]), root)}: put the labels/ folder beside images/"
            )
        self.raise_if([listed, labels, *self.listing.findings(), verify_images(everything, root)])
        return DatasetInfo(
            root=root, task=task, names=names, train_images=len(train), val_images=len(splits["val"]),
            data_yaml=yaml_file, training_data=training,
        )  # fmt: skip

    def _load_yaml(self, yaml_file: Path) -> dict[Any, Any]:
        try:
            raw = read_capped(str(yaml_file), MAX_DATA_YAML_BYTES, yaml_file.name)
        except UnreadableFile as exc:
            raise InvalidInput(f"{shown(yaml_file)} {exc.reason}") from None
        data = load_yaml(raw, shown(yaml_file))
        if not isinstance(data, dict):
            raise InvalidInput(f"{shown(yaml_file)} must be a mapping of names, train and val: fix its top level")
        return data

    def _data_root(self, data: dict[Any, Any], yaml_file: Path) -> Path:
        path = data.get("path")
        if not path:
            return yaml_file.parent
        if not isinstance(path, str):
            raise InvalidInput(f"{yaml_file.name}: path must be a folder name or path, got {excerpt(path)}")
        real = self.folder(yaml_file.parent / os.path.expanduser(path))
        if real is None:
            raise _missing(f"dataset root path: {shown(path)}", yaml_file, data)
        return Path(real)

    def _split_images(
        self, data: dict[Any, Any], key: str, root: Path, yaml_file: Path, bad: Findings
    ) -> tuple[str | list[str], list[_Image]]:
        spec = data.get(key)
        if not spec or not isinstance(spec, (str, list)) or not all(isinstance(e, str) and e for e in _listed(spec)):
            raise InvalidInput(
                f"{yaml_file} has no {key}: give a folder, a .txt image list or a list of those"
                if not spec
                else f"{yaml_file.name}: {key} must be a folder, a .txt image list or a list of those, "
                f"not {excerpt(spec)}"
            )
        images: list[_Image] = []
        resolved: list[str] = []
        for entry in _listed(spec):
            found = self.area.resolve(root / entry)
            # ultralytics retries a missing "../x" as "x": Roboflow exports write train: ../train/images.
            if isinstance(spec, str) and found.real is None and spec.startswith("../"):
                found = self.area.resolve(root / spec[3:])
            if found.real is None:
                raise _missing(f"{key}: {shown(entry)}", yaml_file, data)
            if found.is_dir:
                images += [p for p in list_files(self.listing, found.real, found.real, skip_hidden=True).files
                           if is_image(p[0])]  # fmt: skip
            elif found.is_file and found.real.endswith(".txt"):
                images += self._listed_images(found.real, root, bad)
            elif found.is_file:
                raise InvalidInput(f"{key}: {shown(entry)} must be a folder or a .txt list of image paths")
            else:
                raise InvalidInput(f"{key}: {shown(entry)} is not a regular file or a folder: replace it")
            resolved.append(found.real)
        if not images:
            self.raise_if(self.listing.findings())
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            raise InvalidInput(
                bad.message() or f"{key}: {excerpt(spec)[1:-1]} (under {shown(root)}) holds no {kinds} images: add some"
            )
        return (resolved[0] if isinstance(spec, str) else resolved), sorted(images)

    def _listed_images(self, list_file: str, root: Path, bad: Findings) -> list[_Image]:
        try:
            text = read_capped(list_file, MAX_IMAGE_LIST_BYTES, "image list").decode("utf-8-sig")
        except UnreadableFile as exc:
            raise InvalidInput(f"image list {shown(list_file, root)} {exc.reason}") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"image list {shown(list_file, root)} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
            ) from None
        where = shown(list_file, root)
        parent = os.path.dirname(list_file) + os.sep
        images: list[_Image] = []
        # ultralytics strips the whole text, not each line, and reads "./x" relative to the list file.
        for n, line in enumerate(text.strip().splitlines(), 1):
            full = line.replace("./", parent, 1) if line.startswith("./") else line
            if not is_image(line):
                continue
            if not os.path.isabs(full):
                bad.add(f"{where} line {n}: {excerpt(line)} must be absolute or start with './'")
                continue
            found = self.area.resolve(full)
            if found.real is None:  # missing, or out of the area: the same words either way
                bad.add(f"{where} line {n}: {shown(full, root)} does not exist")
            elif not found.is_file:
                bad.add(f"{where} line {n}: {shown(full, root)} is not a regular file")
            else:
                images.append((full, found.real))
        return images

    def _check_labels(
        self, images: list[_Image], root: Path, nc: int, kpt_shape: Kpt
    ) -> tuple[str, Findings, set[str]]:
        """Parse every label file; return the task guess, the bad files and the images that have labels."""
        bad = Findings("invalid label files", "fix or remove these label files")
        per_file: list[tuple[str, dict[int, int]]] = []
        labelled: set[str] = set()
        for image, _ in images:
            label = _label_path(image)
            found = self.area.resolve(label)
            if found.real is None:
                if found.blocked:  # ultralytics would follow the link: refuse it
                    self.listing.out.add(shown(label, root))
                continue  # an image without a label file is a background image
            labelled.add(image)
            if not found.is_file:
                bad.add(f"{shown(label, root)} is not a regular file")
                continue
            result = read_label(found.real, nc, kpt_shape)
            if isinstance(result, str):
                bad.add(f"{shown(label, root)} {result}")
            else:
                per_file.append((label, result))
        task = guess_task({n for _, counts in per_file for n in counts}, kpt_shape)
        for label, counts in per_file:  # pose field counts were checked row by row
            if wrong := sorted((line, n) for n, line in counts.items() if not fields_ok(task, n)):
                line, n = wrong[0]
                bad.add(f"{shown(label, root)} line {line}: {n} fields, {task} needs {EXPECTED_FIELDS[task]}")
        return task, bad, labelled

    def raise_if(self, findings: list[Findings]) -> None:
        messages = [m for f in findings if (m := f.message())]
        if messages:
            raise InvalidInput(f"dataset {shown(self.root)}: " + "\n".join(messages))


def _listed(spec: str | list[Any]) -> list[Any]:
    return spec if isinstance(spec, list) else [spec]


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name and "\0" not in name


def _read_names(data: dict[Any, Any], yaml_file: Path) -> tuple[str, ...]:
    names = data.get("names")
    if isinstance(names, dict):  # ultralytics accepts {0: a, 1: b} with int or str keys
        by_id = {str(k): v for k, v in names.items()}
        if set(by_id) != {str(i) for i in range(len(by_id))}:
            raise InvalidInput(f"{yaml_file}: names keys must be 0..{len(by_id) - 1}: number classes from 0")
        names = [by_id[str(i)] for i in range(len(by_id))]
    if not isinstance(names, list) or not names:
        raise InvalidInput(f"{yaml_file} has no names: list the class names, e.g. names: [cat, dog]")
    if bad := next((n for n in names if not isinstance(n, (str, int, float)) or isinstance(n, bool)), None):
        raise InvalidInput(f"{yaml_file.name}: each class name must be a word, not {excerpt(bad)}")
    result = tuple(str(n) for n in names)
    nc = data.get("nc")
    if nc is not None and nc != len(result):
        raise InvalidInput(
            f"{yaml_file}: nc is {excerpt(nc, 20)[1:-1]} but names lists {len(result)} classes: make them agree"
        )
    return result


def _read_kpt_shape(data: dict[Any, Any], yaml_file: Path) -> Kpt:
    shape = data.get("kpt_shape")
    if shape is None:
        return None
    ok = isinstance(shape, list) and len(shape) == 2 and all(type(x) is int for x in shape)
    if not ok or shape[0] < 1 or shape[0] > 1000 or shape[1] not in (2, 3):
        raise InvalidInput(
            f"{yaml_file}: kpt_shape must be [keypoints, 2 or 3], e.g. [17, 3], not {excerpt(shape, 40)[1:-1]}"
        )
    return shape[0], shape[1]


def _missing(what: str, yaml_file: Path, data: dict[Any, Any]) -> InvalidInput:
    if data.get("download"):
        return InvalidInput(
            f"{what} does not exist, and {yaml_file.name} would download it, but this system is offline: "
            "download the data on a connected machine and copy it here"
        )
    return InvalidInput(f"{what} does not exist: copy the images there or fix {yaml_file.name}")


def _label_path(image: str) -> str:
    # ultralytics' img2label_paths: the last /images/ becomes /labels/, the suffix becomes .txt.
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"
