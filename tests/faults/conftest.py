"""Fixtures of the fault suite: each test gets its own Redis server, deployment, and process-table sampler.

The harness itself (Redis restarts, workers by PID, the sampler, the exactly-once and predict checks, the
simulated trainer's checkpoint) lives in ``harness.py``; see its docstring for what every test proves.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Deployment, ProcessSampler, RedisServer, make_template_checkpoint
from yolo_task_manager.datasets.sample import make_sample_dataset


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's shared folder of every fault deployment (``shared_data_dirs``): a dataset, an image."""
    return tmp_path_factory.mktemp("fault-shared")


@pytest.fixture(scope="session")
def dataset(shared_dir: Path) -> Path:
    """A small generated detection dataset (the simulated trainer does not read it; the checks do)."""
    return make_sample_dataset(shared_dir / "shapes", train=8, val=4, size=64)


@pytest.fixture(scope="session")
def image(fixtures_dir: Path, shared_dir: Path) -> Path:
    """A real photograph that every user of a fault deployment may read."""
    return Path(shutil.copyfile(fixtures_dir / "images" / "bus.jpg", shared_dir / "bus.jpg"))


@pytest.fixture(scope="session")
def template_checkpoint(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """A resumable yolov8n checkpoint from one real epoch (the simulated trainer's weights and base model)."""
    scratch = tmp_path_factory.mktemp("template")
    return make_template_checkpoint(scratch / "yolov8n-1epoch.pt", dataset, scratch)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own on loopback and a free port; restart it with ``restart()``."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def deployment(
    redis_server: RedisServer, template_checkpoint: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A deployment on the test's Redis (SQLite registry); its workers are ended by PID afterwards."""
    deploy = Deployment(tmp_path_factory.mktemp("root"), redis_server.url(), template_checkpoint, (shared_dir,))
    yield deploy
    deploy.close()


@pytest.fixture
def sampler() -> Iterator[ProcessSampler]:
    """The process-table sampler, running; ``watch(run_id)`` each run to check."""
    s = ProcessSampler().start()
    yield s
    s.stop()
