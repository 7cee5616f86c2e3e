"""The backends the ``IStorage`` contract runs against.

To test another backend, add one ``pytest.param`` to ``BACKENDS``: a callable that builds a fresh, empty
storage whose local scratch space (if any) lives under the given folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from yolo_task_manager.storage import IStorage, LocalFileSystemStorage

BACKENDS: list[object] = [
    pytest.param(lambda root: LocalFileSystemStorage(root), id="local-fs"),
]


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> IStorage:
    """A fresh, empty storage for one test."""
    factory: Callable[[Path], IStorage] = request.param
    return factory(tmp_path / "storage")


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A stand-in weights file outside the storage, as a finished run's best.pt would be."""
    path = tmp_path / "work" / "best.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"fake weights " * 100)
    return path
