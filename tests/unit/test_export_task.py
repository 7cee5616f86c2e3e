"""The export task's answer when the worker lacks the packages a format needs (the dev install has them all)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from yolo_task_manager.api_client.inference import raise_failure
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.tasks.infer import execute_export


@pytest.mark.parametrize(("fmt", "hidden", "named"), [
    ("onnx", "onnxruntime", "onnxruntime"),
    ("onnx", "onnx", "onnx, onnxslim, onnxruntime"),
    ("openvino", "openvino", "openvino"),
])  # fmt: skip
def test_a_missing_extra_is_named_and_nothing_is_installed_or_stored(
    fmt: str, hidden: str, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a stored model, and a worker on which `hidden` (and the modules whose names start with it) is absent
    storage = LocalFileSystemStorage(tmp_path / "root")
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    storage.save_model("alice", weights, "m", ["a"], meta={"task": "detect"})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith(hidden) else real_find_spec(name, *a)
    )

    # When
    reply = execute_export(SimpleNamespace(storage=storage, torch_device="cpu"), "alice", "m", fmt, {})

    # Then: the caller gets a typed error naming the packages and the extra; the model has no export
    with pytest.raises(InvalidInput) as error:
        raise_failure(reply)
    assert str(error.value) == (
        f"export to {fmt} needs {named} on the worker: pip install 'yolo-task-manager[{fmt}]' there "
        "(nothing is installed at run time)"
    )
    assert storage.get_model("alice", "m").exports == {}
