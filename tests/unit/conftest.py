"""Unit-test fixtures: fakeredis, a registry (on SQLite in ``tmp_path``, and again on PostgreSQL), run factories.

Nothing here starts a Redis server or imports torch or ultralytics.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fakes import FakeClock

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.registry import Registry
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import Run, RunSpec

_counter = itertools.count()


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    """A private in-process Redis (its own server, so tests never share keys)."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys() -> Keys:
    return Keys("test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        storage_root=tmp_path, redis_url="redis://unused", key_prefix="test", lease_ttl=2, heartbeat_interval=0.5
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """An empty registry; each test that uses it runs on both databases the project supports."""
    if request.param == "sqlite":
        reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    else:
        reg = Registry(request.getfixturevalue("postgres_url"))
    yield reg
    reg.close()


@pytest.fixture
def create_run(registry: Registry) -> Callable[..., Run]:
    """``create_run(user_id="alice", run_name="r1", ...)`` with every other field defaulted."""

    def _create(**overrides: Any) -> Run:
        fields: dict[str, Any] = {
            "user_id": "alice",
            "run_name": f"r{next(_counter)}",
            "base_model": "yolov8n.yaml",
            "dataset_dir": "/d",
            "task": "detect",
            "epochs": 3,
            "device": "cpu",
            "hyp": {},
            "max_duration": None,
            **overrides,
        }
        return registry.create_run(RunSpec(**fields))

    return _create
