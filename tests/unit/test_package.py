"""The package's public names load lazily and all resolve."""

from __future__ import annotations

import subprocess
import sys

import yolo_task_manager


def test_every_public_name_resolves_and_is_listed():
    assert sorted(yolo_task_manager.__all__) == sorted(yolo_task_manager._WHERE)
    for name in yolo_task_manager.__all__:
        assert getattr(yolo_task_manager, name).__name__ == name


def test_the_training_child_does_not_load_the_producer_api():
    code = (
        "import sys, yolo_task_manager.workers.train_child; print(sorted({'celery', 'sqlalchemy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
