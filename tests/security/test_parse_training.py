"""A real tiny training through the training child never loads a cache a tenant shipped, never writes into the
dataset, and never builds a model from a yaml planted in its working folder.

ultralytics loads ``labels/<split>.cache`` with numpy's ``allow_pickle=True``: the planted caches below run
``touch CANARY`` when loaded. ``test_the_planted_cache_is_live`` shows that ultralytics' own loader would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from yolo_task_manager.datasets import inspect_dataset, write_training_data
from yolo_task_manager.values import RunSpec
from yolo_task_manager.workers.offline import offline_env
from yolo_task_manager.workers.protocol import EXIT_FAILED, EXIT_OK, JOB_FILE, TrainingJob, training_child

REPO = Path(__file__).resolve().parents[2]
TINY = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False}


def _plant_cache(path: Path, canary: Path) -> None:
    """A numpy .npy file holding a pickled object whose unpickling runs ``touch canary``."""
    code = (
        "import os, sys, numpy as np\n"
        "class Payload:\n"
        "    def __reduce__(self): return (os.system, ('touch ' + sys.argv[2],))\n"
        "with open(sys.argv[1], 'wb') as f: np.save(f, np.array(Payload(), dtype=object), allow_pickle=True)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(canary)], check=True)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def tenant(tmp_path: Path) -> dict[str, Path]:
    """alice's area with a copy of coco8 whose labels/ hold crafted train.cache and val.cache files."""
    area = tmp_path / "root" / "alice"
    dataset = Path(shutil.copytree(FIXTURES / "datasets" / "coco8", area / "coco8"))
    canary = tmp_path / "CANARY"
    for split in ("train", "val"):
        _plant_cache(dataset / "labels" / f"{split}.cache", canary)
    run_dir = area / "runs" / "r1"
    run_dir.mkdir(parents=True)
    return {"area": area, "dataset": dataset, "canary": canary, "run_dir": run_dir, "scratch": tmp_path / "worker"}


def _train(tenant: dict[str, Path], model: str = "yolov8n.yaml") -> tuple[int, list[dict[str, Any]], str]:
    """Run the training child as the worker does (job file, pipes, offline env, run folder as cwd), but without
    the sandbox: the guards must hold on their own."""
    run_dir = tenant["run_dir"]
    info = inspect_dataset(tenant["dataset"], area=tenant["area"])
    spec = RunSpec(user_id="alice", run_name="r1", base_model=model, dataset_dir=str(tenant["dataset"]),
                   task="detect", epochs=1, device="cpu", hyp=TINY)  # fmt: skip
    job = TrainingJob(run_id="r1", attempt=1, spec=spec, model=model, data=write_training_data(info, run_dir),
                      torch_device="cpu", save_dir=str(run_dir / "train"))  # fmt: skip
    (run_dir / JOB_FILE).write_text(job.to_json())
    read_fd, write_fd = os.pipe()
    control_r, control_w = os.pipe()
    env = {**offline_env(os.environ, tenant["scratch"]), "PYTHONPATH": str(REPO)}
    with open(run_dir / "train.log", "wb") as log:
        child = subprocess.Popen(
            training_child(run_dir / JOB_FILE, write_fd, control_r),
            pass_fds=[write_fd, control_r], env=env, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    os.close(write_fd)
    os.close(control_r)
    with os.fdopen(read_fd) as pipe:
        events = [json.loads(line) for line in pipe]
    rc = child.wait(timeout=300)
    os.close(control_w)
    return rc, events, (run_dir / "train.log").read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_training_never_loads_the_caches_a_dataset_ships_nor_writes_into_it(tenant: dict[str, Path]) -> None:
    # Given: coco8 with pickled label caches that would touch the canary when loaded
    before = _snapshot(tenant["dataset"])

    # When it is trained on for one tiny epoch through the training child
    rc, events, log = _train(tenant)

    # Then the training finished, the payload never ran, and the dataset folder is exactly as it was
    assert rc == EXIT_OK, log[-3000:]
    assert any(e["type"] == "result" for e in events)
    assert not tenant["canary"].exists()
    assert _snapshot(tenant["dataset"]) == before
    assert "Cache not saved: datasets are read-only to training" in log


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_model_yaml_planted_in_the_run_folder_is_refused(tenant: dict[str, Path]) -> None:
    # Given: ultralytics looks "yolov8n.yaml" up in its working folder (the run's) before its own; alice puts
    # one there whose activation ultralytics would eval()
    canary = tenant["canary"]
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations
    shipped = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models" / "v8" / "yolov8.yaml"
    evil = f"activation: __import__('os').system('touch {canary}')\n" + shipped.read_text()
    (tenant["run_dir"] / "yolov8n.yaml").write_text(evil)

    # When the run trains from yolov8n.yaml
    rc, events, log = _train(tenant)

    # Then it fails on the model check, saying why, and the payload never ran
    assert rc == EXIT_FAILED, log[-3000:]
    error = next(e for e in events if e["type"] == "error")
    assert "InvalidInput" in error["message"] and "activation" in error["message"]
    assert not canary.exists()


@pytest.mark.slow
def test_the_planted_cache_is_live(tenant: dict[str, Path]) -> None:
    # Given the crafted cache; When ultralytics' own loader reads it (as it would without the guard)
    code = "import sys; from ultralytics.data.utils import load_dataset_cache_file as f; f(sys.argv[1])"
    env = {**offline_env(os.environ, tenant["scratch"]), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(tenant["dataset"] / "labels" / "train.cache")], env=env,
                   capture_output=True, timeout=300)  # fmt: skip

    # Then the payload ran: the guard above stops a real attack
    assert tenant["canary"].exists()
