"""What a resumed training child re-sends, and how it writes its checkpoints (by rename, naming a full disk)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from yolo_task_manager.errors import StorageError
from yolo_task_manager.workers.train_child import _atomic_strip, _AtomicPath, trained_epochs


def _table(*rows: tuple[int, float, float]) -> dict[str, list[float]]:
    return {
        "epoch": [r[0] for r in rows],
        "time": [r[1] for r in rows],
        "train/box_loss": [r[2] for r in rows],
    }


def _logged(epoch: int, loss: float) -> dict[str, Any]:
    return {"epoch": epoch, "epochs": 9, "metrics": {"train/box_loss": loss, "fitness": 0.5, "elapsed": 1.0}}


def test_without_a_log_the_results_table_gives_each_saved_epoch_and_the_checkpoint_its_fitness() -> None:
    # Given a checkpoint saved after epoch 2 (ultralytics counts from 0) with two result rows, and no log
    ckpt = {"epoch": 1, "train_results": _table((1, 3.5, 2.0), (2, 7.0, 1.5)), "train_metrics": {"fitness": 0.25}}

    # When its epochs are listed
    epochs = trained_epochs(ckpt, [])

    # Then both are there in order; the saved epoch also carries its fitness
    assert epochs == [
        (1, {"train/box_loss": 2.0, "elapsed": 3.5}),
        (2, {"train/box_loss": 1.5, "elapsed": 7.0, "fitness": 0.25}),
    ]


def test_logged_epochs_are_sent_as_logged_and_the_unlogged_saved_epoch_comes_from_the_checkpoint() -> None:
    # Given: epoch 1 was logged (and maybe never published); the worker died between saving epoch 2 and logging it
    ckpt = {"epoch": 1, "train_results": _table((1, 3.5, 2.0), (2, 7.0, 1.5)), "train_metrics": {"fitness": 0.25}}

    # When
    epochs = trained_epochs(ckpt, [_logged(1, 2.0)])

    # Then epoch 1 has every logged metric (fitness included), epoch 2 what the checkpoint holds
    assert epochs == [
        (1, {"train/box_loss": 2.0, "fitness": 0.5, "elapsed": 1.0}),
        (2, {"train/box_loss": 1.5, "elapsed": 7.0, "fitness": 0.25}),
    ]


def test_epochs_past_the_checkpoint_are_left_out_and_the_latest_line_of_an_epoch_wins() -> None:
    # Given: a killed attempt logged and tabled epoch 3 without saving it; the resumed one redid it, and is
    # now being resumed again from its checkpoint of epoch 3
    table = _table((1, 1.0, 3.0), (2, 2.0, 2.0), (3, 3.0, 9.9), (3, 1.2, 1.0), (4, 2.4, 0.5))
    logged = [_logged(1, 3.0), _logged(2, 2.0), _logged(3, 9.9), _logged(3, 1.0), _logged(4, 0.5)]

    # When
    epochs = trained_epochs({"epoch": 2, "train_results": table, "train_metrics": {}}, logged)

    # Then epoch 3 has the resumed attempt's values and epoch 4, not in the checkpoint, is absent
    assert [(e, m["train/box_loss"]) for e, m in epochs] == [(1, 3.0), (2, 2.0), (3, 1.0)]


def test_a_checkpoint_without_a_results_table_or_log_has_nothing_to_resend() -> None:
    assert trained_epochs({"epoch": 4}, []) == []


def test_ultralytics_checkpoint_writes_go_through_a_rename(tmp_path: Path) -> None:
    # Given last.pt from an earlier epoch, as ultralytics' save_model sees it (through the child's wrapper)
    last = _AtomicPath(tmp_path / "last.pt")
    last.write_bytes(b"epoch 1")
    before = os.stat(last).st_ino

    # When the next epoch's checkpoint is written
    last.write_bytes(b"epoch 2")

    # Then it is a new file renamed into place (a hard link to the old one, as promoted, keeps epoch 1)
    assert last.read_bytes() == b"epoch 2" and os.stat(last).st_ino != before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_strip_that_fails_for_want_of_space_leaves_the_checkpoint_whole_and_names_it(tmp_path: Path) -> None:
    # Given a checkpoint, and ultralytics' strip_optimizer on a disk that fills up mid-save
    best = tmp_path / "best.pt"
    best.write_bytes(b"trained weights")

    def strip(f: str, s: str = "", updates: object = None) -> dict[str, Any]:
        Path(s or f).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # When the child strips it
    with pytest.raises(StorageError) as caught:
        _atomic_strip(strip)(str(best))

    # Then the error names the file and its volume, and the checkpoint is the one before
    assert str(best) in str(caught.value) and "the volume mounted at" in str(caught.value)
    assert best.read_bytes() == b"trained weights" and os.listdir(tmp_path) == ["best.pt"]
