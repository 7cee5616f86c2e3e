"""What a resumed training child re-sends: the epochs its checkpoint holds, from ultralytics' results table."""

from __future__ import annotations

from yolo_task_manager.workers.train_child import trained_epochs


def _table(*rows: tuple[int, float, float]) -> dict[str, list[float]]:
    return {
        "epoch": [r[0] for r in rows],
        "time": [r[1] for r in rows],
        "train/box_loss": [r[2] for r in rows],
    }


def test_every_saved_epoch_is_listed_with_its_losses_and_elapsed_time() -> None:
    # Given a checkpoint saved after epoch 2 (ultralytics counts from 0) with two result rows
    ckpt = {"epoch": 1, "train_results": _table((1, 3.5, 2.0), (2, 7.0, 1.5)), "train_metrics": {"fitness": 0.25}}

    # When its epochs are listed
    epochs = trained_epochs(ckpt)

    # Then both are there in order; the saved epoch also carries its fitness
    assert epochs == [
        (1, {"train/box_loss": 2.0, "elapsed": 3.5}),
        (2, {"train/box_loss": 1.5, "elapsed": 7.0, "fitness": 0.25}),
    ]


def test_a_row_written_after_the_checkpoint_is_left_out_and_the_latest_row_of_an_epoch_wins() -> None:
    # Given a results table where a killed attempt wrote epoch 3 (never saved), and a resumed one rewrote it
    table = _table((1, 1.0, 3.0), (2, 2.0, 2.0), (3, 3.0, 9.9), (3, 1.2, 1.0), (4, 2.4, 0.5))

    # When the checkpoint of epoch 3 is read
    epochs = trained_epochs({"epoch": 2, "train_results": table, "train_metrics": {}})

    # Then epoch 3 has the resumed attempt's values and epoch 4, not in the checkpoint, is absent
    assert [(e, m["train/box_loss"]) for e, m in epochs] == [(1, 3.0), (2, 2.0), (3, 1.0)]


def test_a_checkpoint_without_a_results_table_has_nothing_to_resend() -> None:
    assert trained_epochs({"epoch": 4}) == []
