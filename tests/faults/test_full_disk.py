"""A full disk during a checkpoint save: the run fails saying where, nothing published is truncated, and it
resumes once space is freed. The user's runs live on a small tmpfs of the test's own."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._fence_support import loads, predicts
from tests.integration import conftest as integration
from tests.integration.conftest import Stack, is_resumable, train_followed, wait_for
from yolo_task_manager import RunStatus
from yolo_task_manager.values import EventType

pytestmark = pytest.mark.slow

# tests/integration's deployment fixtures, for this module (pytest finds fixtures among a module's names).
redis_server, base_checkpoint, datasets_dir = (
    integration.redis_server,
    integration.base_checkpoint,
    integration.datasets_dir,
)
stack, shapes = integration.stack, integration.shapes

USER = "dan"
SIZE = 128 << 20


@pytest.fixture
def small_volume(stack: Stack) -> Iterator[Path]:
    """``{root}/dan/runs`` on a tmpfs of ``SIZE`` bytes; skipped where mounting is impossible, except under CI."""
    runs = stack.settings.storage_root / USER / "runs"
    runs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", f"ytm-full-{uuid.uuid4().hex[:6]}",
                              str(runs)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs here (root and mount(8) needed): {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield runs
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=True)


def _fill(volume: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the volume."""
    filler = volume / "filler"
    stat = os.statvfs(volume)
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def test_a_full_disk_fails_the_run_naming_the_file_and_a_resume_completes_it(
    stack: Stack, small_volume: Path, shapes: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    # Given: a 6-epoch run whose first checkpoint is promoted
    stack.start_worker()
    mgr = stack.manager()
    training = train_followed(mgr, USER, shapes, 6, "full")
    run_id = training.run_id
    published = small_volume / run_id / "train" / "weights"
    wait_for(lambda: (published / "last.pt").is_file(), 300, "the first promoted checkpoint")

    # When: the volume fills up during the training
    filler = _fill(small_volume, leave=64 << 10)
    run = mgr.wait(USER, run_id, timeout=300)

    # Then: the run failed, saying which file could not be written and that its volume is full
    assert run.status is RunStatus.FAILED, run.reason
    reason = run.reason or ""
    assert str(small_volume / run_id) in reason and "No space left on device" in reason, reason
    assert f"the volume mounted at {small_volume}" in reason, reason
    # ... and every promoted file is whole
    assert loads(published / "last.pt", published / "best.pt")
    assert is_resumable(published / "last.pt")

    # When: space is freed and the run resumed
    filler.unlink()
    mgr.resume(USER, run_id)
    run = mgr.wait(USER, run_id, timeout=300)

    # Then: it completed from its checkpoint, every epoch recorded and published once, in order
    assert run.status is RunStatus.COMPLETED, run.reason
    assert [e for e, _ in mgr.get_metrics(USER, run_id)] == [1, 2, 3, 4, 5, 6]
    events = [e.epoch for e in mgr._ctx.bus.history(run_id) if e.type is EventType.METRICS]
    assert events == [1, 2, 3, 4, 5, 6]
    assert predicts(mgr, USER, "full", fixtures_dir, tmp_path)
