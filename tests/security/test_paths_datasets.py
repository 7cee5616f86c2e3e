"""A tenant's dataset cannot reach outside the tenant's area, and cannot tell another tenant's files from
missing ones: every way out is refused in the words used for a missing path.

alice attacks; bob's area holds a file whose contents (the canary) must never show up in what alice sees.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from yolo_task_manager.datasets import inspect_dataset, write_training_data
from yolo_task_manager.errors import InvalidInput

BOX = "0 0.5 0.5 0.2 0.2"
CANARY = "bob-canary-7f3a"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A storage root where bob has a labelled image, a label, an image list and a data.yaml."""
    root = tmp_path / "root"
    bob = root / "bob" / "ds"
    _image(bob / "images" / "train" / "b.png")
    (bob / "labels" / "train").mkdir(parents=True)
    (bob / "labels" / "train" / "b.txt").write_text(f"{BOX}\n# {CANARY}\n")
    (bob / "list.txt").write_text(f"./images/train/b.png\n# {CANARY}\n")
    (bob / "data.yaml").write_text(f"train: images/train\nval: images/train\nnames: [{CANARY}]\n")
    (root / "alice").mkdir()
    return root


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(path)
    return path


def _dataset(folder: Path, **keys: object) -> Path:
    """alice's own small detection dataset, with data.yaml keys overridden."""
    for split in ("train", "val"):
        _image(folder / "images" / split / "a.png")
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split / "a.txt").write_text(BOX + "\n")
    data = {"train": "images/train", "val": "images/val", "names": ["cat"], **keys}
    (folder / "data.yaml").write_text(yaml.safe_dump(data))
    return folder


def _refusal(dataset: Path, area: Path) -> str:
    with pytest.raises(InvalidInput) as info:
        inspect_dataset(dataset, area=area)
    message = str(info.value)
    assert CANARY not in message
    return message


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("key", ["train", "val", "test", "path"])
def test_a_split_naming_bobs_existing_folder_reads_exactly_like_a_missing_one(root: Path, key: str) -> None:
    # Given: two datasets of alice's, one naming bob's real folder, one a folder that exists nowhere
    alice, bob = root / "alice", root / "bob" / "ds"
    target = {"path": bob, "train": bob / "images" / "train", "val": bob / "images" / "train"}.get(
        key, bob / "list.txt"
    )
    elsewhere = root / "bob" / "nothing-here"
    before = _snapshot(root / "bob")

    # When both are checked from alice's area
    to_bob = _refusal(_dataset(alice / "a", **{key: str(target)}), alice)
    to_nothing = _refusal(_dataset(alice / "b", **{key: str(elsewhere)}), alice)

    # Then the messages are the same, byte for byte, but for the path alice typed and her dataset's name
    assert to_bob.replace(str(target), "<typed>") == to_nothing.replace(str(elsewhere), "<typed>").replace("/b", "/a")
    assert "does not exist" in to_bob
    assert _snapshot(root / "bob") == before


def test_relative_climbs_and_links_to_bob_read_like_missing_paths(root: Path) -> None:
    # Given: train reached by "..", by a link to bob's folder, and by a link to a folder that is not there
    alice = root / "alice"
    (alice / "to-bob").symlink_to(root / "bob" / "ds" / "images")
    (alice / "to-nowhere").symlink_to(root / "bob" / "ds" / "nowhere")

    typed = ["../../bob/ds/images/train", "../to-bob/train", "../to-nowhere/train", "../none/train"]

    # When
    messages = [_refusal(_dataset(alice / f"ds{i}", train=train), alice) for i, train in enumerate(typed)]

    # Then each says the folder alice named does not exist, and nothing else
    assert messages == [f"train: {t} does not exist: copy the images there or fix data.yaml" for t in typed]


def test_image_list_lines_naming_bobs_files_read_like_missing_files(root: Path) -> None:
    # Given: alice's image list names bob's image, a file that does not exist, and (through a link) bob's image
    alice = root / "alice"
    dataset = _dataset(alice / "ds", train="train.txt")
    bob_image = root / "bob" / "ds" / "images" / "train" / "b.png"
    missing = root / "bob" / "ds" / "images" / "train" / "z.png"
    (dataset / "peek").symlink_to(bob_image.parent)
    (dataset / "train.txt").write_text(f"./images/train/a.png\n{bob_image}\n{missing}\n./peek/b.png\n")

    # When
    message = _refusal(dataset, alice)

    # Then lines 2 and 3 read alike; line 4 is refused too, and so is the link to bob's folder
    assert f"train.txt line 2: {bob_image} does not exist" in message
    assert f"train.txt line 3: {missing} does not exist" in message
    assert "train.txt line 4: peek/b.png does not exist" in message


def test_an_image_list_that_is_a_link_to_bobs_list_reads_like_a_missing_one(root: Path) -> None:
    alice = root / "alice"
    dataset = _dataset(alice / "ds", train="train.txt")
    (dataset / "train.txt").symlink_to(root / "bob" / "ds" / "list.txt")
    message = _refusal(dataset, alice)
    assert message == "train: train.txt does not exist: copy the images there or fix data.yaml"


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("images/train/b.png", "ds/images/train/b.png"),
        ("images/train/bob", "ds/images/train"),
        ("labels/val/a.txt", "ds/labels/train/b.txt"),
        ("labels/val", "ds/labels/train"),
    ],
    ids=["image-file", "image-folder", "label-file", "label-folder"],
)
def test_links_out_of_the_area_anywhere_in_a_dataset_are_refused(root: Path, link: str, target: str) -> None:
    # Given: alice's dataset with one link into bob's dataset (an image, a folder of images, a label, labels)
    alice = root / "alice"
    dataset = _dataset(alice / "ds")
    path = dataset / link
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    path.symlink_to(root / "bob" / target)

    # When
    message = _refusal(dataset, alice)

    # Then the link is named as leading out of her area
    assert f"links that lead out of {alice.resolve()} (or loop) (1): {Path(link)}" in message


def test_a_data_yaml_that_is_a_link_to_bobs_reads_like_none(root: Path) -> None:
    alice = root / "alice"
    (alice / "ds").mkdir()
    (alice / "ds" / "data.yaml").symlink_to(root / "bob" / "ds" / "data.yaml")
    message = _refusal(alice / "ds", alice)
    assert "has no data.yaml" in message


def test_a_dataset_folder_that_is_a_link_to_bobs_reads_like_a_missing_one(root: Path) -> None:
    alice = root / "alice"
    (alice / "ds").symlink_to(root / "bob" / "ds")
    assert _refusal(alice / "ds", alice) == (
        f"dataset folder {alice / 'ds'} does not exist: check the path or copy the dataset there"
    )


def test_class_folders_linked_out_of_the_area_are_refused(root: Path) -> None:
    # Given: a classification dataset whose "dog" class folder is bob's folder of images
    alice = root / "alice"
    for split in ("train", "val"):
        _image(alice / "cls" / split / "cat" / "0.png")
        _image(alice / "cls" / split / "dog" / "0.png")
    shutil.rmtree(alice / "cls" / "train" / "dog")
    (alice / "cls" / "train" / "dog").symlink_to(root / "bob" / "ds" / "images" / "train")

    # When
    message = _refusal(alice / "cls", alice)

    # Then
    assert f"links that lead out of {alice.resolve()} (or loop) (1): {Path('train/dog')}" in message


def test_links_inside_the_area_are_followed(root: Path) -> None:
    # Given: alice's dataset keeps its images in another folder of hers, linked in; its list names them too
    alice = root / "alice"
    shared = _dataset(alice / "shared")
    dataset = alice / "ds"
    dataset.mkdir()
    (dataset / "images").symlink_to(shared / "images")
    (dataset / "labels").symlink_to(shared / "labels")
    (dataset / "val.txt").write_text(f"{shared / 'images' / 'val' / 'a.png'}\n")
    (dataset / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "val.txt", "names": ["c"]}))

    # When
    info = inspect_dataset(dataset, area=alice)

    # Then it passes, and training is pointed at the real folders that were checked
    assert (info.train_images, info.val_images) == (1, 1)
    written = yaml.safe_load(Path(write_training_data(info, alice / "run")).read_text())
    assert written["train"] == str((shared / "images" / "train").resolve())


def test_without_an_area_a_dataset_stays_inside_its_own_folder(root: Path) -> None:
    # Given: a dataset of alice's whose train folder is a link to a sibling folder of hers
    alice = root / "alice"
    _dataset(alice / "other")
    dataset = _dataset(alice / "ds")
    shutil.rmtree(dataset / "images" / "train")
    (dataset / "images" / "train").symlink_to(alice / "other" / "images" / "train")

    # When / Then: on its own it is refused; with alice's area it passes
    assert "does not exist" in _refusal(dataset, dataset)
    assert inspect_dataset(dataset, area=alice).train_images == 1


def test_nothing_is_written_into_the_dataset_or_elsewhere(root: Path) -> None:
    # Given
    alice = root / "alice"
    dataset = _dataset(alice / "ds")
    before = _snapshot(root)

    # When it is checked and its training yaml written elsewhere
    write_training_data(inspect_dataset(dataset, area=alice), root / "run")

    # Then the only new file is the training yaml
    after = _snapshot(root)
    assert set(after) - set(before) == {"run/data.yaml"}
    assert all(after[k] == v for k, v in before.items())
    assert not any(name.endswith(".cache") for name in os.listdir(dataset / "labels"))
