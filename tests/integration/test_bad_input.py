"""Bad input gets a typed error a person can act on, and changes nothing for anyone."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import TINY, Stack
from yolo_task_manager import (
    DeviceUnavailable,
    InvalidInput,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    RunStatus,
    WeightsUnavailable,
    YoloTaskManager,
)
from yolo_task_manager.storage import LocalFileSystemStorage


@pytest.fixture
def world(stack: Stack, coco8: Path, base_checkpoint: Path):
    """A producer with no worker; another user (zoe) already has a queued run and a model."""
    mgr = stack.manager()
    zoe_run = mgr.train("zoe", "yolov8n.pt", str(coco8), epochs=1, run_name="zoe-run", **TINY)
    mgr._ctx.storage.save_model("zoe", base_checkpoint, "zoe-model", ["a"])
    yield mgr, coco8
    # Then (for every test): zoe's run and model are untouched, and the attacker queued nothing
    assert mgr.get_run("zoe", zoe_run).status is RunStatus.QUEUED
    assert [m.name for m in mgr.list_models("zoe")] == ["zoe-model"]
    assert mgr.list_runs("mallory") == []


@pytest.mark.parametrize("user_id", ["../zoe", "/", "", "a" * 65, ".hidden", "zoe/../../etc", None])
def test_unsafe_or_empty_user_ids_are_rejected(world, user_id):
    mgr, coco8 = world
    with pytest.raises(InvalidInput, match="user_id"):
        mgr.train(user_id, "yolov8n.pt", str(coco8), epochs=1, **TINY)


@pytest.mark.parametrize("run_name", ["../x", "a/b", "a" * 65, ".x"])
def test_unsafe_run_names_are_rejected(world, run_name):
    mgr, coco8 = world
    with pytest.raises(InvalidInput, match="run_name"):
        mgr.train("mallory", "yolov8n.pt", str(coco8), epochs=1, run_name=run_name, **TINY)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, "3", True])
def test_epochs_must_be_a_positive_integer(world, epochs):
    mgr, coco8 = world
    with pytest.raises(InvalidInput, match="epochs must be a positive integer"):
        mgr.train("mallory", "yolov8n.pt", str(coco8), epochs=epochs, **TINY)


def test_unknown_training_argument_names_the_closest_ones(world):
    mgr, coco8 = world
    with pytest.raises(InvalidInput, match="unknown training argument 'lr'.*lr0"):
        mgr.train("mallory", "yolov8n.pt", str(coco8), epochs=1, lr=0.01)


def test_missing_weights_say_where_to_put_the_file(world, stack: Stack):
    mgr, coco8 = world
    with pytest.raises(WeightsUnavailable, match=str(stack.settings.pretrained_dir)):
        mgr.train("mallory", "yolov8s.pt", str(coco8), epochs=1, **TINY)


def test_legacy_yolov5_checkpoint_is_refused(world, fixtures_dir: Path, stack: Stack):
    mgr, coco8 = world
    shutil.copyfile(fixtures_dir / "weights" / "yolov5n.pt", stack.settings.pretrained_dir / "yolov5n.pt")
    with pytest.raises(InvalidInput, match="legacy YOLOv5"):
        mgr.train("mallory", "yolov5n.pt", str(coco8), epochs=1, **TINY)


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A .pt whose pickle runs `touch marker` when loaded (GLOBAL posix.system, REDUCE)."""
    command = f"touch {marker}".encode()
    payload = b"\x80\x02cposix\nsystem\nq\x00X" + len(command).to_bytes(4, "little") + command + b"\x85R."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_before_anything_loads_it(world, tmp_path: Path):
    mgr, coco8 = world
    marker = tmp_path / "pwned"
    (mgr.settings.storage_root / "mallory").mkdir(parents=True)
    evil = _crafted_checkpoint(mgr.settings.storage_root / "mallory" / "best.pt", marker)
    with pytest.raises(InvalidInput, match=r"refers to posix\.system.*so it is refused"):
        mgr.train("mallory", str(evil), str(coco8), epochs=1, **TINY)
    assert not marker.exists()


def test_a_checkpoint_swapped_after_it_was_queued_is_refused_on_the_worker(stack: Stack, coco8: Path, tmp_path: Path):
    # Given: a run queued from a sound checkpoint in mallory's folder, which she then replaces with a crafted one
    mgr = stack.manager()
    sound = stack.settings.storage_root / "mallory" / "best.pt"
    sound.parent.mkdir(parents=True)
    shutil.copyfile(stack.settings.pretrained_dir / "yolov8n.pt", sound)
    run_id = mgr.train("mallory", str(sound), str(coco8), epochs=1, **TINY)
    marker = tmp_path / "pwned"
    _crafted_checkpoint(sound, marker)

    # When a worker takes the run
    stack.start_worker()
    run = mgr.wait("mallory", run_id, timeout=120)

    # Then it fails, saying why, and the payload never ran
    assert run.status is RunStatus.FAILED
    assert (
        run.reason is not None
        and "base model check failed on the worker" in run.reason
        and "posix.system" in run.reason
    )
    assert not marker.exists()


def test_broken_datasets_are_refused_with_the_file_named(world, tmp_path: Path):
    mgr, coco8 = world
    # Given: no data.yaml; labels out of range; no images; a corrupt image
    no_yaml = Path(shutil.copytree(coco8, tmp_path / "no_yaml"))
    (no_yaml / "data.yaml").unlink()
    bad_label = Path(shutil.copytree(coco8, tmp_path / "bad_label"))
    label = next((bad_label / "labels" / "train").glob("*.txt"))
    label.write_text("99 0.5 0.5 0.1 0.1\n")
    no_images = Path(shutil.copytree(coco8, tmp_path / "no_images"))
    for image in (no_images / "images" / "train").iterdir():
        image.unlink()
    corrupt = Path(shutil.copytree(coco8, tmp_path / "corrupt"))
    image = next((corrupt / "images" / "train").glob("*.jpg"))
    image.write_bytes(b"not a jpeg at all")

    # When / Then
    for folder, message in [
        (tmp_path / "missing", "does not exist"),
        (no_yaml, "data.yaml"),
        (bad_label, label.name),
        (no_images, "holds no .* images"),
        (corrupt, image.name),
    ]:
        with pytest.raises(InvalidInput, match=message):
            mgr.train("mallory", "yolov8n.pt", str(folder), epochs=1, **TINY)


def test_classify_dataset_with_a_detection_model_is_refused(world, fixtures_dir: Path, tmp_path: Path):
    mgr, _ = world
    data = shutil.copytree(fixtures_dir / "datasets" / "imagenet10", tmp_path / "imagenet10")
    with pytest.raises(InvalidInput, match="classify dataset"):
        mgr.train("mallory", "yolov8n.pt", str(data), epochs=1, **TINY)


def test_duplicate_run_name_is_refused(world):
    mgr, coco8 = world
    with pytest.raises(InvalidInput, match="already has a run named 'zoe-run'"):
        mgr.train("zoe", "yolov8n.pt", str(coco8), epochs=1, run_name="zoe-run", **TINY)
    assert len(mgr.list_runs("zoe")) == 1


def test_another_users_run_answers_exactly_like_a_missing_one(world):
    mgr, _ = world
    zoe_run = mgr.list_runs("zoe")[0].run_id
    for call in (mgr.stop, mgr.resume, mgr.get_run):
        with pytest.raises(NotFound) as foreign:
            call("mallory", zoe_run)
        with pytest.raises(NotFound) as missing:
            call("mallory", "0" * 32)
        assert str(foreign.value).replace(zoe_run, "X") == str(missing.value).replace("0" * 32, "X")


def test_resume_of_a_queued_run_is_an_invalid_transition(world):
    mgr, _ = world
    zoe_run = mgr.list_runs("zoe")[0].run_id
    with pytest.raises(InvalidTransition, match="only stopped, failed, interrupted or timed-out runs resume"):
        mgr.resume("zoe", zoe_run)


def test_a_gpu_that_is_not_there_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DeviceUnavailable, match="cuda:0 is not available"):
        YoloTaskManager(LocalFileSystemStorage(tmp_path), default_device="cuda:0")
    assert not list((tmp_path / ".ytm" / "workers").glob("*.pid"))


def test_another_users_files_cannot_be_trained_on_or_from(world, stack: Stack):
    mgr, coco8 = world
    zoes_data = shutil.copytree(coco8, stack.settings.storage_root / "zoe" / "data")
    zoes_model = mgr.list_models("zoe")[0].path
    with pytest.raises(InvalidInput, match="not in the folder of user 'mallory'"):
        mgr.train("mallory", "yolov8n.pt", str(zoes_data), epochs=1, **TINY)
    with pytest.raises(InvalidInput, match="not in the folder of user 'mallory'"):
        mgr.train("mallory", str(zoes_model), str(coco8), epochs=1, **TINY)


def test_a_user_past_max_queued_per_user_gets_limit_exceeded_and_nothing_is_queued(stack: Stack, coco8: Path):
    # Given a producer whose users may have two runs queued, no worker, and una with two queued
    mgr = stack.manager(max_queued_per_user=2)
    for name in ("one", "two"):
        mgr.train("una", "yolov8n.pt", str(coco8), epochs=1, run_name=name, **TINY)

    # When una queues a third
    with pytest.raises(LimitExceeded) as info:
        mgr.train("una", "yolov8n.pt", str(coco8), epochs=1, run_name="three", **TINY)

    # Then it says which limit and what to do, nothing of it was recorded, and another user may still queue
    assert "max_queued_per_user=2" in str(info.value)
    assert [r.run_name for r in mgr.list_runs("una")] == ["one", "two"]
    assert mgr.get_run("vic", mgr.train("vic", "yolov8n.pt", str(coco8), epochs=1, **TINY)).status is RunStatus.QUEUED
