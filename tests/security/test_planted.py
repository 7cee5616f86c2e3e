"""Files planted in a tenant's folders on the shared volume, by someone who can write there: a crafted
``model.pt`` served for inference, and a crafted ``last.pt`` waiting for ``resume``. A real worker refuses
each before any process loads it, and the canary its payload would write never appears.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import TINY, Stack
from yolo_task_manager import InvalidInput, RunStatus


def crafted_checkpoint(path: Path, canary: Path) -> Path:
    """A .pt whose pickle runs `touch canary` when loaded (GLOBAL posix.system, REDUCE)."""
    command = f"touch {canary}".encode()
    payload = b"\x80\x02cposix\nsystem\nq\x00X" + len(command).to_bytes(4, "little") + command + b"\x85R."
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return path


@pytest.mark.slow
def test_a_planted_model_is_refused_before_an_inference_child_loads_it(
    stack: Stack, base_checkpoint: Path, tmp_path: Path
) -> None:
    # Given a model of mallory's whose weights were then replaced on the volume by a crafted pickle
    stack.start_worker()
    mgr = stack.manager()
    meta = mgr._ctx.storage.save_model("mallory", base_checkpoint, "m", ["a"], meta={"task": "detect", "imgsz": 64})
    canary = tmp_path / "canary"
    crafted_checkpoint(meta.path, canary)

    # When she asks for an inference with it
    with pytest.raises(InvalidInput) as refused:
        mgr.infer("mallory", "m", [b"not even an image"], timeout=120)

    # Then it is refused, naming the call the pickle would make, and nothing ran
    assert "posix.system" in str(refused.value)
    assert not canary.exists()


@pytest.mark.slow
def test_a_planted_last_pt_is_refused_when_the_run_resumes(stack: Stack, coco8: Path, tmp_path: Path) -> None:
    # Given a run of mallory's stopped before any worker took it, whose run folder then got a crafted last.pt
    mgr = stack.manager()
    run_id = mgr.train("mallory", "yolov8n.pt", str(coco8), epochs=1, **TINY)
    assert mgr.stop("mallory", run_id)
    canary = tmp_path / "canary"
    crafted_checkpoint(stack.settings.storage_root / "mallory" / "runs" / run_id / "train" / "weights" / "last.pt",
                       canary)  # fmt: skip

    # When she resumes it and a worker takes it
    mgr.resume("mallory", run_id)
    stack.start_worker()
    run = mgr.wait("mallory", run_id, timeout=120)

    # Then the worker refused the checkpoint, saying why, and the payload never ran
    assert run.status is RunStatus.FAILED
    assert "checkpoint check failed on the worker" in (run.reason or "") and "posix.system" in (run.reason or "")
    assert not canary.exists()
