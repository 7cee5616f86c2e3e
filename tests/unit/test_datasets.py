"""Dataset checks: the six shared fixtures pass, and every kind of broken dataset fails with a message
that names the offending file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from yolo_task_manager.datasets import DatasetInfo, inspect_dataset, write_training_data
from yolo_task_manager.errors import InvalidInput

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shared fixtures sit beside the checkout here, and inside it on the device machine.
SHARED = REPO_ROOT / "shared" if (REPO_ROOT / "shared").is_dir() else REPO_ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "datasets"
BOX = "0 0.5 0.5 0.2 0.2"


# ---------------------------------------------------------------------------- helpers


def _fixture(name: str, tmp_path: Path) -> Path:
    """A private copy of a shared fixture: /work/shared must never be written."""
    if not (FIXTURES / name).is_dir():
        pytest.skip(f"fixture {name} not found under {FIXTURES}")
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _image(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, dtype=np.uint8)).save(path)
    return path


def _yolo(root: Path, labels: dict[str, str | None] | None = None, yaml_text: str | None = None, **keys: Any) -> Path:
    """A YOLO dataset: ``{"train/a": "0 0.5 ..."}`` makes images/train/a.png and labels/train/a.txt."""
    labels = {"train/a": BOX, "val/b": BOX} if labels is None else labels
    for key, text in labels.items():
        split, stem = key.split("/")
        _image(root / "images" / split / f"{stem}.png")
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(text + "\n")
    data = {"train": "images/train", "val": "images/val", "names": ["cat", "dog"], **keys}
    (root / "data.yaml").write_text(yaml_text if yaml_text is not None else yaml.safe_dump(data))
    return root


def _classes(root: Path, splits: dict[str, dict[str, int]]) -> Path:
    """A classification folder: ``{"train": {"cat": 2}}`` makes train/cat/0.png and train/cat/1.png."""
    for split, classes in splits.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _image(root / split / name / f"{i}.png")
    return root


def _error(dataset: Path) -> str:
    with pytest.raises(InvalidInput) as info:
        inspect_dataset(dataset)
    return str(info.value)


# ---------------------------------------------------------------------------- the shared fixtures


@pytest.mark.parametrize(
    ("name", "task", "n_names", "n_train", "n_val"),
    [
        ("coco8", "detect", 80, 4, 4),
        ("coco8-seg", "segment", 80, 4, 4),
        ("coco8-pose", "pose", 1, 4, 4),
        ("dota8", "obb", 15, 4, 4),
        ("imagenet10", "classify", 10, 12, 12),
        ("mnist160", "classify", 10, 80, 80),
    ],
)
def test_fixture_inspects_cleanly(tmp_path: Path, name: str, task: str, n_names: int, n_train: int, n_val: int) -> None:
    # Given
    dataset = _fixture(name, tmp_path)

    # When
    info = inspect_dataset(dataset)

    # Then
    assert (info.task, len(info.names), info.train_images, info.val_images) == (task, n_names, n_train, n_val)
    assert info.root == dataset.resolve()


def test_yolo_fixture_reports_its_yaml_and_names_in_id_order(tmp_path: Path) -> None:
    # Given
    dataset = _fixture("coco8", tmp_path)

    # When
    info = inspect_dataset(str(dataset))

    # Then
    assert info.data_yaml == dataset.resolve() / "data.yaml"
    assert info.names[:3] == ("person", "bicycle", "car")


def test_classification_fixture_with_data_yaml_is_still_a_folder(tmp_path: Path) -> None:
    # Given: imagenet10 holds a data.yaml beside train/<class>/ and val/<class>/
    dataset = _fixture("imagenet10", tmp_path)

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.data_yaml is None
    assert info.names[0] == "n01440764"


# ---------------------------------------------------------------------------- the folder


def test_missing_folder_is_rejected(tmp_path: Path) -> None:
    # When
    message = _error(tmp_path / "nowhere")

    # Then
    assert "nowhere does not exist" in message


def test_file_instead_of_folder_is_rejected(tmp_path: Path) -> None:
    # Given
    (tmp_path / "data.yaml").write_text("names: [a]\n")

    # When
    message = _error(tmp_path / "data.yaml")

    # Then
    assert "is not a folder" in message


def test_folder_without_yaml_or_classes_explains_the_expected_layout(tmp_path: Path) -> None:
    # Given
    _image(tmp_path / "photos" / "a.png")

    # When
    message = _error(tmp_path)

    # Then
    assert "no data.yaml" in message
    assert "train/<class>/" in message


# ---------------------------------------------------------------------------- data.yaml


def test_unparseable_yaml_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, yaml_text="names: [cat, dog\ntrain: images/train\n")

    # When
    message = _error(dataset)

    # Then
    assert "data.yaml is not readable YAML" in message


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, yaml_text="- images/train\n- images/val\n")

    # When
    message = _error(dataset)

    # Then
    assert "must be a mapping" in message


@pytest.mark.parametrize("key", ["names", "train", "val"])
def test_missing_required_key_is_rejected(tmp_path: Path, key: str) -> None:
    # Given
    data = {"train": "images/train", "val": "images/val", "names": ["cat", "dog"]}
    del data[key]
    dataset = _yolo(tmp_path, yaml_text=yaml.safe_dump(data))

    # When
    message = _error(dataset)

    # Then
    assert f"has no {key}" in message


def test_nc_that_disagrees_with_names_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, nc=3)

    # When
    message = _error(dataset)

    # Then
    assert "nc is 3 but names lists 2 classes" in message


def test_names_dict_with_a_gap_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, names={0: "cat", 2: "dog"})

    # When
    message = _error(dataset)

    # Then
    assert "names keys must be 0..1" in message


def test_names_dict_and_data_yml_spelling_are_accepted(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, names={1: "dog", 0: "cat"})
    (dataset / "data.yaml").rename(dataset / "data.yml")

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.names == ("cat", "dog")
    assert info.data_yaml == dataset.resolve() / "data.yml"


# ---------------------------------------------------------------------------- where the images are


def test_missing_train_folder_is_named(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, train="images/training")

    # When
    message = _error(dataset)

    # Then
    assert "train: images/training" in message
    assert "does not exist" in message


def test_missing_data_with_a_download_key_says_to_copy_it_from_a_connected_machine(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, val="images/val2017", download="https://example.com/coco.zip")

    # When
    message = _error(dataset)

    # Then
    assert "images/val2017" in message
    assert "download the data on a connected machine and copy it here" in message


def test_path_climbing_out_of_the_dataset_is_reported_as_missing_data(tmp_path: Path) -> None:
    # Given: a path key that climbs to a folder that exists beside the dataset, and one that exists nowhere
    (tmp_path / "a" / "etc").mkdir(parents=True)
    climbing = _yolo(tmp_path / "a" / "b" / "ds", path="../../etc")
    nowhere = _yolo(tmp_path / "c" / "b" / "ds", path="../../etc")

    # When
    message = _error(climbing)

    # Then: it is refused in the words of a missing folder, naming only what the tenant wrote
    assert message == "dataset root path: ../../etc does not exist: copy the images there or fix data.yaml"
    assert message == _error(nowhere)


def test_relative_path_key_is_resolved_against_the_yaml_folder(tmp_path: Path) -> None:
    # Given: data.yaml sits one level above the data it describes
    _yolo(tmp_path / "data")
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump({"path": "data", "train": "images/train", "val": "images/val", "names": ["a", "b"]})
    )

    # When
    info = inspect_dataset(tmp_path)

    # Then
    assert info.root == (tmp_path / "data").resolve()
    assert info.train_images == 1


def test_train_folder_without_images_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path)
    (dataset / "images" / "empty").mkdir()
    (dataset / "images" / "empty" / "notes.txt").write_text("no pictures here")
    (dataset / "data.yaml").write_text(yaml.safe_dump({"train": "images/empty", "val": "images/val", "names": ["a"]}))

    # When
    message = _error(dataset)

    # Then
    assert "train: images/empty" in message
    assert "holds no" in message


def test_roboflow_parent_paths_fall_back_like_ultralytics(tmp_path: Path) -> None:
    # Given: a Roboflow export writes train: ../train/images beside train/images and train/labels
    for split in ("train", "valid"):
        _image(tmp_path / split / "images" / "x.png")
        (tmp_path / split / "labels").mkdir()
        (tmp_path / split / "labels" / "x.txt").write_text(BOX + "\n")
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump({"train": "../train/images", "val": "../valid/images", "names": ["cat"]})
    )

    # When
    info = inspect_dataset(tmp_path)

    # Then
    assert (info.task, info.train_images, info.val_images) == ("detect", 1, 1)


def test_image_list_files_are_read_relative_to_themselves(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, {"train/a": BOX, "train/c": BOX, "val/b": BOX}, train="train.txt")
    (dataset / "train.txt").write_text("./images/train/a.png\n./images/train/c.png\n")

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.train_images == 2


def test_image_list_entries_that_are_missing_or_cwd_relative_are_named(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, train="train.txt")
    (dataset / "train.txt").write_text("./images/train/a.png\nimages/train/a.png\n./images/train/gone.png\n")

    # When
    message = _error(dataset)

    # Then
    assert "train.txt line 2: 'images/train/a.png' must be absolute or start with './'" in message
    assert "train.txt line 3" in message
    assert "gone.png does not exist" in message


# ---------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("row", "complaint"),
    [
        ("0 0.5 0.5 0.2 abc", "non-numeric field"),
        ("2 0.5 0.5 0.2 0.2", "class id 2 is not an integer in 0..1"),
        ("-1 0.5 0.5 0.2 0.2", "class id -1 is not an integer in 0..1"),
        ("0.5 0.5 0.5 0.2 0.2", "class id 0.5 is not an integer"),
        ("0 1.2 0.5 0.2 0.2", "coordinate 1.2 is above 1"),
        ("0 0.5 0.5 -0.2 0.2", "negative value -0.2"),
        ("0 0.5 0.5 nan 0.2", "non-finite number"),
        ("0 0.5 0.5 0.2 0.2 0.9", "6 fields, detect needs 5"),
        ("0 0.5 0.5 0.2", "4 fields, detect needs 5"),
    ],
)
def test_bad_label_row_is_rejected_naming_the_file_and_line(tmp_path: Path, row: str, complaint: str) -> None:
    # Given
    dataset = _yolo(tmp_path, {"train/a": BOX, "train/bad": f"{BOX}\n{row}", "val/b": BOX})

    # When
    message = _error(dataset)

    # Then
    assert "invalid label files (1)" in message
    assert f"{Path('labels/train/bad.txt')} line 2" in message
    assert complaint in message
    assert "fix or remove these label files" in message


def test_coordinates_within_ultralytics_tolerance_are_accepted(tmp_path: Path) -> None:
    # Given: ultralytics accepts up to 1% outside [0, 1]
    dataset = _yolo(tmp_path, {"train/a": "1 0.5 0.5 1.005 0.2", "val/b": "0 0.001 0.5 0.002 0.2"})

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.task == "detect"


def test_label_file_that_is_not_text_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path)
    (dataset / "labels" / "train" / "a.txt").write_bytes(b"\xff\xfe\x00\x81garbage")

    # When
    message = _error(dataset)

    # Then
    assert f"{Path('labels/train/a.txt')} cannot be read as UTF-8 text" in message


def test_polygon_labels_make_a_segment_dataset(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, {"train/a": "0 0.1 0.1 0.5 0.1 0.3 0.6", "val/b": "1 0.1 0.1 0.5 0.1 0.3 0.6 0.2 0.9"})

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.task == "segment"


@pytest.mark.parametrize(
    ("row", "fields"),
    [("0 0.1 0.1 0.5 0.1 0.3 0.6 0.2", 8), (BOX, 5)],
)
def test_segment_rows_with_an_even_count_or_a_box_are_rejected(tmp_path: Path, row: str, fields: int) -> None:
    # Given
    dataset = _yolo(tmp_path, {"train/a": "0 0.1 0.1 0.5 0.1 0.3 0.6", "val/bad": row})

    # When
    message = _error(dataset)

    # Then
    assert f"{Path('labels/val/bad.txt')} line 1: {fields} fields, segment needs an odd count" in message


def test_nine_field_rows_with_corners_off_the_image_make_an_obb_dataset(tmp_path: Path) -> None:
    # Given: a rotated box may poke out of the image, as in dota8; ultralytics bounds only its bounding box
    obb = "1 0.9 0.4 1.04 0.45 0.98 0.6 0.85 0.55"
    dataset = _yolo(tmp_path, {"train/a": obb, "val/b": obb})

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.task == "obb"


def test_pose_row_with_the_wrong_keypoint_count_is_rejected(tmp_path: Path) -> None:
    # Given
    good = BOX + " 0.5 0.5 2 0.4 0.4 1"
    dataset = _yolo(tmp_path, {"train/a": good, "val/bad": BOX + " 0.5 0.5 2"}, kpt_shape=[2, 3])

    # When
    message = _error(dataset)

    # Then
    assert f"{Path('labels/val/bad.txt')} line 1: 8 fields, a pose label with kpt_shape [2, 3] needs 11" in message


def test_bad_kpt_shape_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, kpt_shape=[17, 4])

    # When
    message = _error(dataset)

    # Then
    assert "kpt_shape must be [keypoints, 2 or 3]" in message


def test_images_without_label_files_are_backgrounds(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, {"train/a": BOX, "train/empty": None, "val/b": None})

    # When
    info = inspect_dataset(dataset)

    # Then
    assert (info.train_images, info.val_images) == (2, 1)


def test_train_split_without_any_label_file_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path, {"train/a": None, "val/b": BOX})

    # When
    message = _error(dataset)

    # Then
    assert "no train image has a label file" in message
    assert str(Path("labels/train/a.txt")) in message


def test_many_bad_files_show_five_and_a_count(tmp_path: Path) -> None:
    # Given
    labels: dict[str, str | None] = {f"train/bad{i}": "7 0.5 0.5 0.2 0.2" for i in range(8)}
    dataset = _yolo(tmp_path, {"train/a": BOX, **labels, "val/b": BOX})

    # When
    message = _error(dataset)

    # Then
    assert message.count("class id 7") == 5
    assert "invalid label files (8)" in message
    assert "and 3 more" in message


# ---------------------------------------------------------------------------- images


@pytest.mark.parametrize("content", [b"", os.urandom(64), b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_image_is_named(tmp_path: Path, content: bytes) -> None:
    # Given
    dataset = _yolo(tmp_path)
    (dataset / "images" / "val" / "broken.jpg").write_bytes(content)

    # When
    message = _error(dataset)

    # Then
    assert f"unreadable or corrupt images (1): {Path('images/val/broken.jpg')}" in message
    assert "replace or delete these image files" in message


def test_truncated_png_is_named(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path)
    good = (dataset / "images" / "train" / "a.png").read_bytes()
    (dataset / "images" / "train" / "a.png").write_bytes(good[: len(good) - 20])

    # When
    message = _error(dataset)

    # Then
    assert str(Path("images/train/a.png")) in message


def test_image_under_ten_pixels_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path)
    _image(dataset / "images" / "train" / "tiny.png", size=(8, 32))

    # When
    message = _error(dataset)

    # Then
    assert f"{Path('images/train/tiny.png')} is 8x32 pixels, under 10 a side" in message


def test_files_that_are_not_images_are_ignored(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path)
    (dataset / "images" / "train" / "README.md").write_text("hello")
    (dataset / "images" / "train" / "clip.gif").write_bytes(os.urandom(32))
    (dataset / "images" / "train" / ".hidden.png").write_bytes(b"")

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.train_images == 1


def test_upper_case_suffixes_count_as_images(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path)
    Image.new("RGB", (12, 12)).save(dataset / "images" / "train" / "b.JPG", format="JPEG")

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info.train_images == 2


# ---------------------------------------------------------------------------- classification


def test_classification_folder_counts_val_and_names_classes_alphabetically(tmp_path: Path) -> None:
    # Given
    dataset = _classes(tmp_path, {"train": {"dog": 2, "cat": 3}, "val": {"cat": 1, "dog": 1}})

    # When
    info = inspect_dataset(dataset)

    # Then
    assert info == DatasetInfo(
        root=dataset.resolve(),
        task="classify",
        names=("cat", "dog"),
        train_images=5,
        val_images=2,
        data_yaml=None,
    )


def test_classification_with_one_class_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _classes(tmp_path, {"train": {"cat": 2}, "val": {"cat": 1}})

    # When
    message = _error(dataset)

    # Then
    assert "has 1 class folder: add a folder of images per class" in message


def test_classification_class_folder_without_images_is_named(tmp_path: Path) -> None:
    # Given
    dataset = _classes(tmp_path, {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 0}})

    # When
    message = _error(dataset)

    # Then
    assert f"class folders without images (1): {Path('val/dog')}" in message


def test_classification_corrupt_image_is_named(tmp_path: Path) -> None:
    # Given
    dataset = _classes(tmp_path, {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    (dataset / "train" / "dog" / "bad.jpeg").write_bytes(os.urandom(100))

    # When
    message = _error(dataset)

    # Then
    assert str(Path("train/dog/bad.jpeg")) in message
    assert "unreadable or corrupt" in message


def test_classification_without_val_or_test_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _classes(tmp_path, {"train": {"cat": 2, "dog": 2}})

    # When
    message = _error(dataset)

    # Then
    assert "no val/ (or test/)" in message


def test_classification_val_class_unknown_to_train_is_rejected(tmp_path: Path) -> None:
    # Given
    dataset = _classes(tmp_path, {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dgo": 1}})

    # When
    message = _error(dataset)

    # Then
    assert "has classes train/ lacks (dgo)" in message


# ---------------------------------------------------------------------------- write_training_data


def test_training_yaml_pins_an_absolute_path_and_drops_download(tmp_path: Path) -> None:
    # Given
    dataset = _yolo(tmp_path / "ds", path=".", download="https://example.com/x.zip", flip_idx=[0])
    info = inspect_dataset(dataset)

    # When
    written = write_training_data(info, tmp_path / "run" / "cfg")

    # Then: the root and each split are the absolute folders that were checked
    data = yaml.safe_load(Path(written).read_text())
    root = dataset.resolve()
    assert written == str(tmp_path / "run" / "cfg" / "data.yaml")
    assert data["path"] == str(root)
    assert "download" not in data
    assert (data["train"], data["val"], data["names"], data["flip_idx"]) == (
        str(root / "images" / "train"),
        str(root / "images" / "val"),
        ["cat", "dog"],
        [0],
    )
    assert os.listdir(tmp_path / "run" / "cfg") == ["data.yaml"]


def test_training_yaml_names_the_split_that_was_checked_not_a_fallback(tmp_path: Path) -> None:
    # Given: a Roboflow-style "../train/images" that is missing inside the dataset (so train/images is checked)
    # while a folder of that name exists just outside it
    dataset = tmp_path / "ds"
    for split in ("train", "valid"):
        _image(dataset / split / "images" / "x.png")
        (dataset / split / "labels").mkdir()
        (dataset / split / "labels" / "x.txt").write_text(BOX + "\n")
    (tmp_path / "train" / "images").mkdir(parents=True)
    (dataset / "data.yaml").write_text(
        yaml.safe_dump({"train": "../train/images", "val": "valid/images", "names": ["a"]})
    )

    # When
    data = yaml.safe_load(Path(write_training_data(inspect_dataset(dataset), tmp_path / "out")).read_text())

    # Then: training reads the folder that was checked, never the one ultralytics would pick outside
    assert data["train"] == str(dataset.resolve() / "train" / "images")


def test_training_yaml_of_a_fixture_points_at_its_images(tmp_path: Path) -> None:
    # Given
    info = inspect_dataset(_fixture("coco8-pose", tmp_path))

    # When
    written = write_training_data(info, tmp_path / "out")

    # Then
    data = yaml.safe_load(Path(written).read_text())
    assert (Path(data["path"]) / data["train"]).is_dir()
    assert data["kpt_shape"] == [17, 3]
    assert data["names"] == {0: "person"}


def test_training_yaml_replaces_an_older_one(tmp_path: Path) -> None:
    # Given
    info = inspect_dataset(_yolo(tmp_path / "ds"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data.yaml").write_text("stale: true\n")

    # When
    written = write_training_data(info, tmp_path / "out")

    # Then
    assert "stale" not in yaml.safe_load(Path(written).read_text())


def test_classification_trains_from_the_folder_itself(tmp_path: Path) -> None:
    # Given
    info = inspect_dataset(_classes(tmp_path / "ds", {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}))

    # When
    data = write_training_data(info, tmp_path / "out")

    # Then
    assert data == str((tmp_path / "ds").resolve())
    assert not (tmp_path / "out").exists()


def test_checks_do_not_import_torch_or_ultralytics(tmp_path: Path) -> None:
    # Given: the producer process must stay light
    dataset = _yolo(tmp_path)
    code = (
        "import sys; from yolo_task_manager.datasets import inspect_dataset; "
        f"inspect_dataset({str(dataset)!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics')))"
    )

    # When
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)

    # Then
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("entry", ["images/\0train", "images/train\0/../../x"])
def test_a_path_with_a_nul_byte_reads_as_missing(tmp_path: Path, entry: str) -> None:
    # Given a split whose path holds a NUL byte (the os would raise ValueError on it)
    dataset = _yolo(tmp_path, yaml_text=yaml.safe_dump({"train": entry, "val": "images/val", "names": ["a"]}))

    # When / Then: a typed error, as for a missing folder
    assert "does not exist" in _error(dataset)


# ---------------------------------------------------------------------------- the demo's score


def _detection(class_id: int, xywhn: tuple[float, float, float, float]) -> Any:
    from yolo_task_manager.predictions import Detection

    return Detection(class_id=class_id, class_name=str(class_id), confidence=0.9, box_xyxy=(0, 0, 0, 0),
                     box_xywhn=xywhn)  # fmt: skip


@pytest.mark.parametrize(
    ("detection", "found"),
    [
        ((1, (0.5, 0.5, 0.2, 0.2)), True),  # the disc, where it is
        ((1, (0.52, 0.5, 0.2, 0.2)), True),  # slightly off: IoU 0.82
        ((0, (0.5, 0.5, 0.2, 0.2)), False),  # the right place, the wrong shape
        ((1, (0.5, 0.5, 0.6, 0.6)), False),  # a box around everything: IoU 0.11
        ((1, (0.1, 0.1, 0.2, 0.2)), False),  # the right shape elsewhere
    ],
)
def test_the_demo_counts_a_shape_found_only_for_the_right_class_in_the_right_place(
    tmp_path: Path, detection: tuple[int, tuple[float, float, float, float]], found: bool
):
    from yolo_task_manager.datasets.sample import found_shapes

    labels = tmp_path / "val_000.txt"
    labels.write_text("1 0.5 0.5 0.2 0.2\n0 0.8 0.8 0.1 0.1\n")
    assert found_shapes(labels, [_detection(*detection)]) is found
    assert found_shapes(labels, []) is False
