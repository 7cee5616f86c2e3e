"""No user reaches another user's files through a path; export keys and option types."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_task_manager.api_client.inference import EXPORT_OPTIONS, check_options
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.ids import check_access
from yolo_task_manager.tasks.infer import export_key


def test_paths_in_another_users_area_are_refused(tmp_path: Path):
    root = tmp_path / "root"
    (root / "bob" / "models").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="not in the folder of user 'alice'"):
        check_access(root / "bob" / "models", root, "alice")
    with pytest.raises(InvalidInput):
        check_access(root / "alice" / ".." / "bob", root, "alice")  # resolved before it is checked
    with pytest.raises(InvalidInput):
        check_access(root / "pretrained" / "x.pt", root, "alice")


def test_own_area_allowed_areas_and_outside_paths_pass(tmp_path: Path):
    root = tmp_path / "root"
    assert check_access(root / "alice" / "data", root, "alice") == (root / "alice" / "data").resolve()
    assert check_access(root / "pretrained" / "x.pt", root, "alice", also=(root / "pretrained",))
    assert check_access(tmp_path / "datasets" / "x", root, "alice") == (tmp_path / "datasets" / "x").resolve()


def test_export_keys_are_readable_when_they_can_be_and_never_collide():
    assert export_key("onnx", {}) == "onnx"
    assert export_key("onnx", {"imgsz": 320}) == "onnx-imgsz-320"
    listed = export_key("onnx", {"imgsz": [320, 640]})
    assert listed.startswith("onnx-") and "[" not in listed
    long_a = export_key("openvino", {"dynamic": True, "batch": 8, "simplify": True, "opset": 17, "workspace": 4})
    long_b = export_key("openvino", {"dynamic": True, "batch": 8, "simplify": True, "opset": 17, "workspace": 8})
    assert long_a != long_b and len(long_a) <= 64


@pytest.mark.parametrize(("opts", "message"), [
    ({"imgsz": "big"}, "'imgsz' must be int or list or tuple"),
    ({"dynamic": 1}, "'dynamic' must be bool"),
    ({"opset": True}, "'opset' must be int"),
    ({"int8": True}, "unknown export option"),
])  # fmt: skip
def test_export_option_values_are_checked_before_anything_runs(opts, message):
    with pytest.raises(InvalidInput, match=message):
        check_options(opts, EXPORT_OPTIONS, "export")
