"""Ownership comes from the path, never from files: a forged meta.json, or links in a tenant's folder, never
make storage hand out another tenant's files, or write into another tenant's folder.

bob's model.pt holds the canary bytes: no path storage gives alice may lead to them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from yolo_task_manager.errors import NotFound, StorageError
from yolo_task_manager.storage import LocalFileSystemStorage

CANARY = b"bob's weights, canary 51c2"


@pytest.fixture
def storage(tmp_path: Path) -> LocalFileSystemStorage:
    """A storage where bob has a model "m" (weights = the canary) and alice has a model "mine"."""
    storage = LocalFileSystemStorage(tmp_path / "root")
    weights = tmp_path / "w.pt"
    weights.write_bytes(CANARY)
    storage.save_model("bob", weights, "m", ["b"])
    weights.write_bytes(b"alice's weights")
    storage.save_model("alice", weights, "mine", ["a"], meta={"task": "detect"})
    return storage


def _alice_model(storage: LocalFileSystemStorage) -> Path:
    return storage.root / "alice" / "models" / "mine"


def _forge(storage: LocalFileSystemStorage, **changes: object) -> None:
    meta_file = _alice_model(storage) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta.update(changes)
    meta_file.write_text(json.dumps(meta))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _reaches_the_canary(paths: list[str | Path]) -> bool:
    return any(Path(p).is_file() and Path(p).read_bytes() == CANARY for p in paths)


def test_owner_and_name_come_from_the_path_not_the_file(storage: LocalFileSystemStorage) -> None:
    # Given alice's meta.json claims the model is bob's "m"
    _forge(storage, user_id="bob", name="m")

    # When alice reads and lists her model
    meta = storage.get_model("alice", "mine")

    # Then it is hers, under its folder's name, and its weights are hers
    assert (meta.user_id, meta.name) == ("alice", "mine")
    assert [(m.user_id, m.name) for m in storage.list_models("alice")] == [("alice", "mine")]
    assert not _reaches_the_canary([meta.path])


@pytest.mark.parametrize(
    "rel", ["../../../bob/models/m/model.pt", "{root}/bob/models/m/model.pt", "exports/link-to-bob"]
)
def test_exports_and_plots_that_lead_out_of_the_model_folder_are_left_out(
    storage: LocalFileSystemStorage, rel: str
) -> None:
    # Given alice's meta.json lists an export and a plot that are bob's weights (by "..", absolute, or a link)
    folder = _alice_model(storage)
    (folder / "exports").mkdir()
    (folder / "exports" / "link-to-bob").symlink_to(storage.root / "bob" / "models" / "m" / "model.pt")
    rel = rel.format(root=storage.root)
    _forge(storage, exports={"onnx": rel, "torchscript": "model.pt"}, plots=[rel])

    # When alice reads it
    meta = storage.get_model("alice", "mine")

    # Then only the export inside her folder is listed, and nothing leads to bob's weights
    assert set(meta.exports) == {"torchscript"}
    assert meta.plots == ()
    assert not _reaches_the_canary([meta.path, *meta.exports.values(), *meta.plots])


def test_a_forged_export_is_not_handed_back_as_already_exported(
    storage: LocalFileSystemStorage, tmp_path: Path
) -> None:
    # Given a forged "onnx" export pointing at bob's weights, and a real export about to be stored
    _forge(storage, exports={"onnx": "../../../bob/models/m/model.pt"})
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"onnx")

    # When the export is stored under that key
    stored = storage.add_export("alice", "mine", "onnx", exported)

    # Then the real export is stored in her folder, and listed
    assert stored == _alice_model(storage).resolve() / "exports" / "onnx" / "model.onnx"
    assert storage.get_model("alice", "mine").exports == {"onnx": str(stored)}
    assert not _reaches_the_canary([stored])


@pytest.mark.parametrize("task", ["hack", "../x", 3, None])
def test_a_forged_task_is_refused(storage: LocalFileSystemStorage, task: object) -> None:
    _forge(storage, task=task)
    with pytest.raises(StorageError, match="is damaged"):
        storage.get_model("alice", "mine")
    assert storage.list_models("alice") == []


@pytest.mark.parametrize(
    "link",
    ["models/mine", "models/mine/model.pt", "models/mine/meta.json"],
    ids=["model-folder", "weights", "meta"],
)
def test_links_to_bobs_model_read_as_a_missing_model(storage: LocalFileSystemStorage, link: str) -> None:
    # Given: alice's model folder, its weights, or its meta.json, replaced by a link to bob's
    path = storage.root / "alice" / link
    target = storage.root / "bob" / link.replace("mine", "m")
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    else:
        path.unlink()
    path.symlink_to(target)

    # When / Then: alice's model is missing, exactly as a model she never had
    with pytest.raises(NotFound) as linked:
        storage.get_model("alice", "mine")
    with pytest.raises(NotFound) as missing:
        storage.get_model("alice", "never")
    assert str(linked.value).replace("'mine'", "'never'") == str(missing.value)
    assert storage.list_models("alice") == []


@pytest.mark.parametrize("folder", ["models", "runs", "predictions"])
def test_a_folder_linked_to_bobs_area_is_never_written_through(
    storage: LocalFileSystemStorage, tmp_path: Path, folder: str
) -> None:
    # Given: alice's models/, runs/ or predictions/ is a link into bob's area
    alice = storage.root / "alice"
    if (alice / folder).exists():
        os.rename(alice / folder, tmp_path / "aside")
    (alice / folder).symlink_to(storage.root / "bob")
    before = _snapshot(storage.root / "bob")
    weights = tmp_path / "new.pt"
    weights.write_bytes(b"new")

    # When a model is published, or a run or prediction folder asked for
    with pytest.raises(StorageError, match="is not a folder of user 'alice'"):
        {
            "models": lambda: storage.save_model("alice", weights, "x", ["a"]),
            "runs": lambda: storage.run_dir("alice", "r1"),
            "predictions": lambda: storage.predictions_dir("alice", "q1"),
        }[folder]()

    # Then nothing was written in bob's area
    assert _snapshot(storage.root / "bob") == before


@pytest.mark.timeout(20)
def test_a_meta_json_that_is_a_fifo_or_huge_does_not_hang_or_load(storage: LocalFileSystemStorage) -> None:
    # Given: alice's meta.json is a FIFO nobody writes to
    meta_file = _alice_model(storage) / "meta.json"
    meta_file.unlink()
    os.mkfifo(meta_file)

    # When / Then: read as a missing model, at once
    with pytest.raises(NotFound):
        storage.get_model("alice", "mine")

    # And a 2 MiB meta.json is refused as damaged
    meta_file.unlink()
    with open(meta_file, "wb") as f:
        f.truncate(2 << 20)
    with pytest.raises(StorageError, match="is damaged"):
        storage.get_model("alice", "mine")
