"""Redis restarting under a training, the embedded worker dying, and the time limit (a frozen worker: tests/faults)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Stack, is_resumable, train_followed
from yolo_task_manager import RunStatus, YoloTaskManager
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.storage import LocalFileSystemStorage

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path: Path):
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    yield server
    server.stop()


@pytest.fixture
def own_stack(stack: Stack, own_redis: EmbeddedRedis):
    """The stack's settings, on a Redis server this test may restart."""
    stack.settings = stack.settings.replace(redis_url=own_redis.url)
    stack.redis = stack.redis.from_url(own_redis.url)
    return stack


def test_a_redis_restart_mid_training_loses_no_event_and_no_run(own_stack: Stack, own_redis: EmbeddedRedis, shapes):
    # Given: a 6-epoch training that has reported its first epoch
    own_stack.start_worker()
    mgr = own_stack.manager()
    training = train_followed(mgr, "fay", shapes, 6, "weather")
    run_id = training.run_id
    training.wait_for_epoch(1)

    # When: Redis goes away for longer than the run's lease lives, and comes back on the same port and data
    own_redis.stop()
    time.sleep(own_stack.settings.lease_ttl + 2)
    own_redis.start()
    run = mgr.wait("fay", run_id, timeout=300)

    # Then: past its lease's life the attempt was given up (another worker might have taken the run) and the
    # run resumed from its promoted checkpoint; every epoch reached the registry and the caller, once, in order
    assert run.status is RunStatus.COMPLETED, run.reason
    steps = [to for _, to, _, _ in mgr._ctx.registry.get_transitions(run_id)]
    assert steps == ["queued", "dispatched", "running", "interrupted", "queued", "dispatched", "running", "completed"]
    assert [e for e, _ in mgr.get_metrics("fay", run_id)] == [1, 2, 3, 4, 5, 6]
    assert training.reported(6) == [1, 2, 3, 4, 5, 6]
    history = mgr._ctx.bus.history(run_id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))


def test_max_duration_ends_the_run_timed_out_with_a_resumable_checkpoint(stack: Stack, shapes: Path):
    # Given: a long training allowed 8 seconds
    stack.start_worker()
    mgr = stack.manager()
    training = train_followed(mgr, "gus", shapes, 50, "slow", max_duration="8s")
    run_id = training.run_id

    # When
    run = mgr.wait("gus", run_id, timeout=300)

    # Then
    assert run.status is RunStatus.TIMED_OUT and run.reason == "ran past max_duration=8s"
    last = stack.settings.storage_root / "gus" / "runs" / run_id / "train" / "weights" / "last.pt"
    if training.epochs:  # an epoch finished within the limit, so a checkpoint exists
        assert is_resumable(last)
    assert len(training.epochs) < 50


def test_the_embedded_worker_is_started_again_when_it_dies_and_the_run_resumes(stack: Stack, shapes: Path):
    # Given: the single-machine default (its own Redis and worker) training 3 epochs, at epoch 1
    settings = stack.settings.replace(redis_url=None)
    with YoloTaskManager(LocalFileSystemStorage(settings.storage_root), default_device="cpu", settings=settings) as mgr:
        training = train_followed(mgr, "gus", shapes, 3, "phoenix")
        run_id = training.run_id
        training.wait_for_epoch(1)
        worker = mgr._worker
        assert worker is not None and worker.process is not None
        first = worker.process

        # When: its worker is killed
        os.killpg(first.pid, signal.SIGKILL)
        run = mgr.wait("gus", run_id, timeout=300)

        # Then: another worker took over, and the run resumed from its checkpoint and completed
        assert run.status is RunStatus.COMPLETED, run.reason
        assert worker.process is not first and worker.process.poll() is None and len(worker.restarts) == 1
        steps = [to for _, to, _, _ in mgr._ctx.registry.get_transitions(run_id)]
        assert steps == [
            "queued", "dispatched", "running", "interrupted", "queued", "dispatched", "running", "completed",
        ]
        assert training.reported(3) == [1, 2, 3]
    assert worker.process.poll() is not None  # and close() stopped the new one
