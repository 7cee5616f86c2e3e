"""A tenant's dataset files are parsed as bounded data: no YAML tags that run code, no alias bombs, no FIFO that
hangs the check, no file too big to read, and messages that quote at most a short, escaped excerpt."""

from __future__ import annotations

import os
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from yolo_task_manager.datasets import inspect_dataset, write_training_data
from yolo_task_manager.datasets.files import MAX_DATA_YAML_BYTES, MAX_IMAGE_LIST_BYTES, MAX_LABEL_BYTES
from yolo_task_manager.errors import InvalidInput

BOX = "0 0.5 0.5 0.2 0.2"
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    + ["names: *i", "train: images/train", "val: images/val"]
)


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(path)
    return path


def _dataset(folder: Path, yaml_text: str | None = None) -> Path:
    for split in ("train", "val"):
        _image(folder / "images" / split / "a.png")
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split / "a.txt").write_text(BOX + "\n")
    (folder / "data.yaml").write_text(yaml_text or "train: images/train\nval: images/val\nnames: [cat]\n")
    return folder


def _refusal(dataset: Path) -> str:
    with pytest.raises(InvalidInput) as info:
        inspect_dataset(dataset)
    return str(info.value)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "where",
    ["images/train/f.png", "labels/train/a.txt", "data.yaml", "train.txt"],
    ids=["image", "label", "yaml", "list"],
)
def test_a_fifo_anywhere_is_refused_without_blocking(tmp_path: Path, where: str) -> None:
    # Given: a FIFO (no writer will ever open it) where the check would read an image, a label, the yaml or a list
    canary = tmp_path / "canary"
    dataset = _dataset(tmp_path / "ds")
    if where == "train.txt":
        (dataset / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [cat]\n")
    (dataset / where).unlink(missing_ok=True)
    os.mkfifo(dataset / where)

    # When
    started = time.monotonic()
    message = _refusal(dataset)

    # Then it is refused at once, saying the file is not a regular file (or, for data.yaml, that there is none)
    assert time.monotonic() - started < 5
    assert re.search("not (a )?regular file|has no data.yaml", message)
    assert not canary.exists()


@pytest.mark.timeout(20)
def test_a_billion_laughs_yaml_is_refused_fast_and_small(tmp_path: Path) -> None:
    # Given: a data.yaml of 1 KiB whose names expand to 10**9 strings through aliases
    dataset = _dataset(tmp_path / "ds", BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1024

    # When
    tracemalloc.start()
    started = time.monotonic()
    message = _refusal(dataset)
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Then it is refused in well under a second and a few MiB
    assert "expands to more than" in message and "aliases" in message
    assert elapsed < 1.0
    assert peak < 20 << 20


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("a: &a [*a]\nnames: *a\ntrain: x\nval: x\n", "an alias refers to a node that contains it"),
        ("names: " + "[" * 200 + "]" * 200 + "\ntrain: x\nval: x\n", "nested deeper than"),
        ("names: !!python/object/apply:os.system ['touch CANARY']\ntrain: x\nval: x\n", "could not determine"),
    ],
    ids=["self-alias", "deep", "python-tag"],
)
def test_yaml_that_loops_nests_too_deep_or_names_python_is_refused(tmp_path: Path, text: str, complaint: str) -> None:
    # Given
    canary = tmp_path / "CANARY"
    dataset = _dataset(tmp_path / "ds", text)

    # When
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        message = _refusal(dataset)
    finally:
        os.chdir(cwd)

    # Then
    assert "data.yaml is not readable YAML" in message and complaint in message
    assert not canary.exists()


@pytest.mark.parametrize(
    ("where", "limit"),
    [("data.yaml", MAX_DATA_YAML_BYTES), ("labels/train/a.txt", MAX_LABEL_BYTES), ("train.txt", MAX_IMAGE_LIST_BYTES)],
    ids=["yaml", "label", "list"],
)
def test_files_over_their_size_limit_are_refused_and_nothing_is_written(tmp_path: Path, where: str, limit: int) -> None:
    # Given: the file one byte over its limit (a sparse file: nothing big is written)
    dataset = _dataset(tmp_path / "ds")
    if where == "train.txt":
        (dataset / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [cat]\n")
    with open(dataset / where, "wb") as f:
        f.truncate(limit + 1)
    before = sorted(os.listdir(dataset))

    # When
    message = _refusal(dataset)

    # Then the message names the file and the limit, and the dataset folder is unchanged
    assert Path(where).name in message and f"is larger than {limit >> 20} MiB" in message
    assert sorted(os.listdir(dataset)) == before


def test_messages_quote_only_a_short_escaped_excerpt_of_a_file(tmp_path: Path) -> None:
    # Given: a label row that paints the terminal red, is 5,000 characters long and holds a bidi override
    dataset = _dataset(tmp_path / "ds")
    row = "0 0.5 \x1b[31mRED\u202e " + "x" * 5000
    (dataset / "labels" / "train" / "a.txt").write_text(row + "\n")

    # When
    message = _refusal(dataset)

    # Then the row is quoted escaped, cut at 80 characters
    assert "\x1b" not in message and "\u202e" not in message
    assert "\\x1b[31mRED\\u202e" in message
    assert "x" * 81 not in message and "…" in message


def test_a_yaml_error_names_the_line_without_quoting_the_file(tmp_path: Path) -> None:
    # Given: a long first line, then a syntax error on line 3
    secret = "s" * 500
    dataset = _dataset(tmp_path / "ds", f"# {secret}\ntrain: images/train\nnames: [cat, dog\n")

    # When
    message = _refusal(dataset)

    # Then
    assert "data.yaml is not readable YAML (line" in message
    assert secret not in message and len(message) < 300


def test_a_download_script_is_never_run_and_never_passed_on(tmp_path: Path) -> None:
    # Given: a data.yaml whose download key is Python that ultralytics would exec() when val is missing
    canary = tmp_path / "canary"
    text = f"train: images/train\nval: images/val\nnames: [cat]\ndownload: open({str(canary)!r}, 'w')\n"
    dataset = _dataset(tmp_path / "ds", text)

    # When it is checked and its training yaml written
    written = yaml.safe_load(Path(write_training_data(inspect_dataset(dataset), tmp_path / "run")).read_text())

    # Then
    assert "download" not in written
    assert not canary.exists()


@pytest.mark.parametrize("masks_dir", ["../../bob", "/etc", "a/b", 3])
def test_masks_dir_must_be_a_plain_folder_name(tmp_path: Path, masks_dir: object) -> None:
    dataset = _dataset(tmp_path / "ds", yaml.safe_dump({"train": "images/train", "val": "images/val",
                                                         "names": ["c"], "masks_dir": masks_dir}))  # fmt: skip
    assert "masks_dir must be a folder name" in _refusal(dataset)
