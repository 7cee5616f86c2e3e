"""The per-epoch terminal line shows training losses and this task's scores, not validation losses."""

from __future__ import annotations

from yolo_task_manager.cli import _epoch_line


def test_epoch_line_shows_training_losses_and_scores():
    metrics = {"train/box_loss": 6.87865, "val/box_loss": 6.07273, "metrics/mAP50(B)": 0.1,
               "metrics/mAP50-95(B)": 0.05, "metrics/accuracy_top1": 0.5, "elapsed": 2.8}  # fmt: skip
    line = _epoch_line(1, 4, metrics)
    assert line.startswith("[#####...............]   1/4")
    assert "box_loss 6.879" in line and "6.073" not in line
    assert "mAP50 0.100 mAP50-95 0.050 accuracy_top1 0.500" in line and line.endswith("2.8s")
