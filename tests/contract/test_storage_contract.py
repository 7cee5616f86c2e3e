"""The ``IStorage`` contract: what every storage backend must do, whatever it stores models on."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_task_manager.errors import InvalidInput, NotFound, StorageError
from yolo_task_manager.storage import IStorage


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".tmp-", ".trash-"))]


def test_the_backend_implements_the_protocol(storage: IStorage) -> None:
    assert isinstance(storage, IStorage)


def test_a_saved_model_can_be_listed_read_and_loaded(storage: IStorage, weights: Path) -> None:
    # Given a finished run's weights
    # When they are published as "cats-v1" with labels and metadata
    saved = storage.save_model(
        "alice",
        weights,
        "cats-v1",
        ["cat", "dog"],
        meta={"task": "detect", "base_model": "yolov8n.pt", "run_id": "abc123", "imgsz": 320,
              "metrics": {"mAP50": 0.5}},
    )  # fmt: skip

    # Then list, get and get_model_path all show the same model, and its weights are the file's bytes
    assert [m.name for m in storage.list_models("alice")] == ["cats-v1"]
    got = storage.get_model("alice", "cats-v1")
    assert got == saved
    assert (got.name, got.user_id, got.labels, got.task) == ("cats-v1", "alice", ("cat", "dog"), "detect")
    assert (got.base_model, got.run_id, got.imgsz, got.metrics) == ("yolov8n.pt", "abc123", 320, {"mAP50": 0.5})
    assert got.size_bytes == weights.stat().st_size
    assert got.created_at.tzinfo is not None
    path = storage.get_model_path("alice", "cats-v1")
    assert Path(path).read_bytes() == weights.read_bytes()


def test_the_source_file_is_left_in_place(storage: IStorage, weights: Path) -> None:
    # Given weights a run still owns
    original = weights.read_bytes()

    # When they are published
    storage.save_model("alice", weights, "m1", ["a"])

    # Then the run's file is untouched
    assert weights.read_bytes() == original


def test_list_models_is_sorted_by_name(storage: IStorage, weights: Path) -> None:
    # Given models saved in no particular order
    for name in ("zebra", "apple", "mango"):
        storage.save_model("alice", weights, name, ["x"])

    # When they are listed
    # Then they come sorted by name
    assert [m.name for m in storage.list_models("alice")] == ["apple", "mango", "zebra"]


def test_a_user_without_models_has_an_empty_list(storage: IStorage) -> None:
    assert storage.list_models("nobody") == []


def test_saving_over_an_existing_name_is_refused_and_keeps_the_first(
    storage: IStorage, weights: Path, tmp_path: Path
) -> None:
    # Given alice's model "m1"
    first = storage.save_model("alice", weights, "m1", ["cat"])
    other = tmp_path / "other.pt"
    other.write_bytes(b"different weights")

    # When other weights are published under the same name
    with pytest.raises(InvalidInput) as info:
        storage.save_model("alice", other, "m1", ["dog"])

    # Then the message names the model, the first model is intact, and nothing half-written is left
    assert "'m1'" in str(info.value)
    assert storage.get_model("alice", "m1") == first
    assert Path(storage.get_model_path("alice", "m1")).read_bytes() == weights.read_bytes()
    assert [m.name for m in storage.list_models("alice")] == ["m1"]
    assert _leftovers(tmp_path) == []


def test_delete_model_returns_true_then_false(storage: IStorage, weights: Path) -> None:
    # Given a saved model
    storage.save_model("alice", weights, "m1", ["cat"])

    # When it is deleted twice
    first, second = storage.delete_model("alice", "m1"), storage.delete_model("alice", "m1")

    # Then the first delete removes it and the second finds nothing
    assert (first, second) == (True, False)
    assert storage.list_models("alice") == []
    with pytest.raises(NotFound):
        storage.get_model("alice", "m1")
    with pytest.raises(NotFound):
        storage.get_model_path("alice", "m1")


def test_a_deleted_name_can_be_saved_again(storage: IStorage, weights: Path, tmp_path: Path) -> None:
    # Given a model that was deleted
    storage.save_model("alice", weights, "m1", ["cat"])
    storage.delete_model("alice", "m1")
    newer = tmp_path / "newer.pt"
    newer.write_bytes(b"v2")

    # When new weights are saved under its name
    storage.save_model("alice", newer, "m1", ["dog"])

    # Then the new model is there
    assert Path(storage.get_model_path("alice", "m1")).read_bytes() == b"v2"
    assert storage.get_model("alice", "m1").labels == ("dog",)
    assert _leftovers(tmp_path) == []


def test_deleting_a_model_of_an_unknown_user_returns_false(storage: IStorage) -> None:
    assert storage.delete_model("nobody", "m1") is False


def test_get_of_a_missing_model_raises_not_found_naming_list_models(storage: IStorage) -> None:
    with pytest.raises(NotFound, match="list_models"):
        storage.get_model("alice", "missing")


def test_a_user_never_sees_another_users_models(storage: IStorage, weights: Path) -> None:
    # Given alice's model "shared-name"
    storage.save_model("alice", weights, "shared-name", ["cat"])

    # When bob lists, reads, loads and deletes by that name
    # Then he sees nothing, and alice's model survives his delete
    assert storage.list_models("bob") == []
    with pytest.raises(NotFound):
        storage.get_model("bob", "shared-name")
    with pytest.raises(NotFound):
        storage.get_model_path("bob", "shared-name")
    assert storage.delete_model("bob", "shared-name") is False
    assert [m.name for m in storage.list_models("alice")] == ["shared-name"]


def test_two_users_may_use_the_same_model_name(storage: IStorage, weights: Path, tmp_path: Path) -> None:
    # Given alice and bob each save a model called "best"
    bobs_weights = tmp_path / "bob.pt"
    bobs_weights.write_bytes(b"bob")
    storage.save_model("alice", weights, "best", ["cat"])
    storage.save_model("bob", bobs_weights, "best", ["dog"])

    # When each loads "best"
    # Then each gets their own
    assert Path(storage.get_model_path("bob", "best")).read_bytes() == b"bob"
    assert Path(storage.get_model_path("alice", "best")).read_bytes() == weights.read_bytes()


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/abs", ".hidden", ""])
def test_unsafe_model_names_are_rejected_everywhere(storage: IStorage, weights: Path, tmp_path: Path, bad: str) -> None:
    # Given a model name that could escape the user's folder
    # When any method is called with it
    # Then InvalidInput is raised and nothing is written outside the storage
    with pytest.raises(InvalidInput):
        storage.save_model("alice", weights, bad, ["x"])
    with pytest.raises(InvalidInput):
        storage.get_model("alice", bad)
    with pytest.raises(InvalidInput):
        storage.get_model_path("alice", bad)
    with pytest.raises(InvalidInput):
        storage.delete_model("alice", bad)
    assert not (tmp_path / "x").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["../bob", "..", "a/b", ".hidden", ""])
def test_unsafe_user_ids_are_rejected_everywhere(storage: IStorage, weights: Path, bad: str) -> None:
    with pytest.raises(InvalidInput):
        storage.save_model(bad, weights, "m1", ["x"])
    with pytest.raises(InvalidInput):
        storage.list_models(bad)
    with pytest.raises(InvalidInput):
        storage.delete_model(bad, "m1")
    with pytest.raises(InvalidInput):
        storage.run_dir(bad, "run1")


def test_a_failed_save_raises_storage_error_and_leaves_nothing(storage: IStorage, tmp_path: Path) -> None:
    # Given a source file that does not exist (the run's best.pt vanished)
    missing = tmp_path / "work" / "gone.pt"

    # When it is published
    with pytest.raises(StorageError) as info:
        storage.save_model("alice", missing, "m1", ["cat"])

    # Then the error names the file, no model appears, and no temporary folder is left behind
    assert str(missing) in str(info.value)
    assert storage.list_models("alice") == []
    with pytest.raises(NotFound):
        storage.get_model("alice", "m1")
    assert _leftovers(tmp_path) == []


def test_a_folder_as_source_raises_storage_error(storage: IStorage, tmp_path: Path) -> None:
    # Given a folder where a weights file was expected
    folder = tmp_path / "work" / "weights"
    folder.mkdir(parents=True)

    # When it is published
    # Then StorageError is raised and nothing is left behind
    with pytest.raises(StorageError):
        storage.save_model("alice", folder, "m1", ["cat"])
    assert storage.list_models("alice") == []
    assert _leftovers(tmp_path) == []


def test_run_dir_is_created_under_the_users_area_and_is_stable(storage: IStorage) -> None:
    # Given a run of alice's
    # When its folder is asked for twice
    first = Path(storage.run_dir("alice", "run1"))
    second = Path(storage.run_dir("alice", "run1"))

    # Then it exists, is the same folder, and is writable
    assert first == second
    assert first.is_dir()
    (first / "last.pt").write_bytes(b"ckpt")
    assert (second / "last.pt").read_bytes() == b"ckpt"


def test_run_dirs_of_different_users_are_apart(storage: IStorage) -> None:
    # Given two users with a run of the same id
    alices = Path(storage.run_dir("alice", "run1"))
    bobs = Path(storage.run_dir("bob", "run1"))

    # When alice's run writes a file
    (alices / "results.csv").write_text("epoch\n1\n")

    # Then bob's folder is another one, and alice's folder lies inside her own area
    assert alices != bobs
    assert not (bobs / "results.csv").exists()
    assert "alice" in alices.parts and "bob" not in alices.parts


def test_run_dirs_do_not_show_up_as_models(storage: IStorage) -> None:
    # Given a run folder with a checkpoint
    (Path(storage.run_dir("alice", "run1")) / "best.pt").write_bytes(b"ckpt")

    # When models are listed
    # Then the run is not one
    assert storage.list_models("alice") == []


@pytest.mark.parametrize("bad", ["../run", "a/b", ".x"])
def test_unsafe_run_ids_are_rejected(storage: IStorage, bad: str) -> None:
    with pytest.raises(InvalidInput):
        storage.run_dir("alice", bad)
