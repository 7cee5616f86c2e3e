"""Training end to end through real Redis, real Celery workers and real ultralytics."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import TINY, Stack, is_resumable, train_followed, wait_for
from yolo_task_manager import EventType, RunStatus, YoloTaskManager
from yolo_task_manager.storage.local_fs import LocalFileSystemStorage

pytestmark = pytest.mark.slow

METRIC_KEYS = {"train/box_loss", "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)",
               "metrics/mAP50-95(B)", "fitness", "lr/pg0", "elapsed"}  # fmt: skip


def transitions(mgr: YoloTaskManager, run_id: str) -> list[str]:
    return [to for _, to, _, _ in mgr._ctx.registry.get_transitions(run_id)]


def test_seed_example_runs_as_written_on_the_embedded_default(base_checkpoint: Path, coco8: Path, tmp_path: Path):
    # Given: the official file name in the operator's pretrained folder, as they would copy it, and alice's
    # dataset in her own folder
    root = tmp_path / "dl-platform"
    (root / "_system" / "pretrained").mkdir(parents=True)
    shutil.copyfile(base_checkpoint, root / "_system" / "pretrained" / "yolov8n.pt")
    coco8 = Path(shutil.copytree(coco8, root / "alice" / "datasets" / "vehicles"))
    q: queue.Queue = queue.Queue()

    # When: the seed's example, with no Redis or worker configured
    with YoloTaskManager(storage_backend=LocalFileSystemStorage(root=str(root)), default_device="cpu") as mgr:
        run_id = mgr.train(
            user_id="alice", base_model="yolov8n.pt", dataset_dir=str(coco8), epochs=2, run_name="veh_v1",
            callbacks={"on_metrics": lambda r, e, m: q.put((r, e, m))}, **TINY,
        )  # fmt: skip
        run = mgr.wait("alice", run_id, timeout=300)
        epochs = [wait_for(lambda: q.get(timeout=10), what="metrics") for _ in range(2)]
        models = mgr.list_models("alice")
        history = mgr._ctx.bus.history(run_id)
        stored = mgr.get_metrics("alice", run_id)
        feed = list(mgr.subscribe("alice", until_done=False, timeout=1))  # every run of the user
        resumed = list(mgr.subscribe("alice", run_id, after="2"))

    # Then: completed, each epoch's metrics reached the caller once and in order, the model is published
    assert run.status is RunStatus.COMPLETED, run.reason
    assert [(r, e) for r, e, _ in epochs] == [(run_id, 1), (run_id, 2)]
    assert q.empty()
    assert set(epochs[0][2]) >= METRIC_KEYS
    assert [e for e, _ in stored] == [1, 2]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [e.status.value for e in history if e.type.value == "status"] == [
        "queued", "dispatched", "running", "completed",
    ]
    assert [event for _, event in feed] == history and all("-" in event_id for event_id, _ in feed)
    assert [int(i) for i, _ in resumed] == list(range(3, len(history) + 1)) and resumed[-1][
        1
    ].status.value == "completed"
    assert [m.name for m in models] == ["veh_v1"]
    assert models[0].labels[:3] == ("person", "bicycle", "car") and models[0].task == "detect"
    assert models[0].path == root / "alice" / "models" / "veh_v1" / "model.pt" and models[0].size_bytes > 1_000_000


def test_stop_keeps_a_resumable_checkpoint_and_resume_finishes_the_epochs(stack: Stack, shapes: Path):
    # Given: a running 8-epoch training that is stopped as soon as epoch 1 is reported
    stack.start_worker()
    mgr = stack.manager()
    seen: list[int] = []

    def on_metrics(run_id: str, epoch: int, metrics: dict) -> None:
        seen.append(epoch)
        if epoch == 1:
            assert mgr.stop("bob", run_id) is True

    run_id = mgr.train("bob", "yolov8n.pt", str(shapes), epochs=8, run_name="stopme",
                       callbacks={"on_metrics": on_metrics}, **TINY)  # fmt: skip

    # When
    stopped = mgr.wait("bob", run_id, timeout=300)
    last = stack.settings.storage_root / "bob" / "runs" / run_id / "train" / "weights" / "last.pt"
    resumable = is_resumable(last)
    mgr.resume("bob", run_id)
    done = mgr.wait("bob", run_id, timeout=300)

    # Then: stopped with a resumable last.pt, then completed; every epoch reported exactly once
    assert stopped.status is RunStatus.STOPPED and stopped.reason == "stopped by user"
    assert resumable
    assert done.status is RunStatus.COMPLETED, done.reason
    wait_for(lambda: len(seen) >= 8, 30, "all epochs")
    assert seen == list(range(1, 9))  # the resumed child re-sends its checkpoint's epochs: dropped as copies
    assert [epoch for epoch, _ in mgr.get_metrics("bob", run_id)] == list(range(1, 9))
    assert stopped.last_epoch is not None and stopped.last_epoch < 8
    steps = mgr._ctx.registry.get_transitions(run_id)
    assert [to for _, to, _, _ in steps] == [
        "queued", "dispatched", "running", "stopped", "queued", "dispatched", "running", "completed",
    ], steps


def test_a_training_that_ignores_a_stop_is_killed_after_the_grace_period(stack: Stack, shapes: Path):
    # Given: a training whose process is frozen (SIGSTOP) right after epoch 1, so it cannot honour a stop
    worker = stack.start_worker(stop_grace=3.0)
    mgr = stack.manager()
    training = train_followed(mgr, "hal", shapes, 4, "frozen")
    run_id = training.run_id
    training.wait_for_epoch(1)
    # The training process itself (in the sandbox, below bwrap), not its sandbox: freezing bwrap freezes nothing
    (child,) = [p for p in psutil.Process(worker.pid).children(recursive=True) if "train_child" in " ".join(p.cmdline())
                and p.name().startswith("python")]  # fmt: skip
    child.suspend()

    # When: it is asked to stop
    assert mgr.stop("hal", run_id) is True
    stopped = mgr.wait("hal", run_id, timeout=120)

    # Then: the worker killed it after the grace period, and the run still resumes to the end
    assert stopped.status is RunStatus.STOPPED and stopped.reason == "stopped by user"
    assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    log = "".join(p.read_text() for p in stack.settings.state_dir.glob("worker-*.log"))
    assert f"run {run_id} ignored the stop request for 3.0s: killing it" in log
    mgr.resume("hal", run_id)
    assert mgr.wait("hal", run_id, timeout=300).status is RunStatus.COMPLETED


def test_stop_on_a_queued_run_ends_it_without_running(stack: Stack, coco8: Path):
    # Given: a run no worker can take (nobody serves cuda:7)
    mgr = stack.manager()
    run_id = mgr.train("carol", "yolov8n.pt", str(coco8), epochs=1, run_name="waits", device="cuda:7", **TINY)

    # When
    answered = mgr.stop("carol", run_id)

    # Then
    run = mgr.get_run("carol", run_id)
    assert answered is True and run.status is RunStatus.STOPPED
    assert transitions(mgr, run_id) == ["queued", "stopped"]
    assert mgr.stop("carol", run_id) is False


def test_worker_killed_mid_epoch_is_requeued_and_resumes_from_last_pt(stack: Stack, shapes: Path):
    # Given: a worker training a 3-epoch run
    first = stack.start_worker()
    mgr = stack.manager()
    training = train_followed(mgr, "dave", shapes, 3, "survivor")
    run_id = training.run_id
    training.wait_for_epoch(1)
    child = json.loads((stack.settings.storage_root / "dave" / "runs" / run_id / "spec.json").read_text())
    assert child["run_id"] == run_id

    # When: kill -9 the worker in the middle of epoch 2, then start another one
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    stack.start_worker()
    run = mgr.wait("dave", run_id, timeout=300)

    # Then: the run was interrupted, requeued, resumed (no epoch trained twice) and completed
    assert run.status is RunStatus.COMPLETED, run.reason
    steps = mgr._ctx.registry.get_transitions(run_id)
    assert [to for _, to, _, _ in steps] == [
        "queued", "dispatched", "running", "interrupted", "queued", "dispatched", "running", "completed",
    ]
    assert "worker lost" in (steps[3][2] or "")
    assert training.reported(3) == [1, 2, 3]
    log = (stack.settings.storage_root / "dave" / "runs" / run_id / "train.log").read_text()
    assert "Resuming training" in log or "resuming from" in log


def test_an_epoch_saved_but_not_yet_reported_when_the_worker_dies_is_reported_by_the_resumed_attempt(
    stack: Stack, shapes: Path
):
    # Given: a worker training a 3-epoch run, killed as soon as epoch 1's checkpoint is announced. Ultralytics
    # saves last.pt before its epoch-end callbacks, so epoch 1's metrics (or, if the orphaned child saved
    # epoch 2 before it noticed, epoch 2's) are usually in a checkpoint but not yet in Redis.
    first = stack.start_worker()
    mgr = stack.manager()
    run_id = mgr.train("erin", "yolov8n.pt", str(shapes), epochs=3, run_name="window", **TINY)
    for _, event in mgr.subscribe("erin", run_id, timeout=300):
        if event.type is EventType.CHECKPOINT:
            os.kill(first.pid, signal.SIGKILL)
            break
    first.wait()

    # When: another worker resumes the run
    stack.start_worker()
    run = mgr.wait("erin", run_id, timeout=300)

    # Then: every epoch is in the stream and the registry exactly once, in order, with every metric
    assert run.status is RunStatus.COMPLETED, run.reason
    assert transitions(mgr, run_id) == [
        "queued", "dispatched", "running", "interrupted", "queued", "dispatched", "running", "completed",
    ]
    reported = [e for _, e in mgr.subscribe("erin", run_id, after="0", timeout=5) if e.type is EventType.METRICS]
    assert [e.epoch for e in reported] == [1, 2, 3]
    assert all(set(e.metrics or {}) >= METRIC_KEYS for e in reported), [sorted(e.metrics or {}) for e in reported]
    assert [epoch for epoch, _ in mgr.get_metrics("erin", run_id)] == [1, 2, 3]


@pytest.mark.postgres
def test_a_deployment_on_postgresql_trains_and_records_every_epoch(stack: Stack, coco8: Path, postgres_url: str):
    # Given: a producer and a worker whose registry is a real PostgreSQL server, as in docker-compose
    stack.start_worker(database_url=postgres_url)
    mgr = stack.manager(database_url=postgres_url)

    # When
    training = train_followed(mgr, "gail", coco8, 2, "pg")
    run_id = training.run_id
    run = mgr.wait("gail", run_id, timeout=300)

    # Then: the run, its transitions, its metrics and its model are all there
    assert run.status is RunStatus.COMPLETED, run.reason
    assert transitions(mgr, run_id) == ["queued", "dispatched", "running", "completed"]
    assert [epoch for epoch, values in mgr.get_metrics("gail", run_id) if set(values) >= METRIC_KEYS] == [1, 2]
    assert training.reported(2) == [1, 2]
    assert [m.name for m in mgr.list_models("gail")] == ["pg"]
    assert mgr._ctx.registry.engine.dialect.name == "postgresql"


def test_limits_hold_and_users_are_served_round_robin(stack: Stack, coco8: Path):
    # Given: two workers, global_limit 2, per_user_limit 1, and three users with two runs each
    mgr = stack.manager(global_limit=2, per_user_limit=1)
    runs = [mgr.train(user, "yolov8n.pt", str(coco8), epochs=1, run_name=f"{user}-{i}", **TINY)
            for user in ("ann", "ben", "cat") for i in (1, 2)]  # fmt: skip

    # When: workers come up only after everything is queued (ann's runs are the oldest)
    stack.start_worker(node=f"{stack.settings.node}a", global_limit=2, per_user_limit=1)
    stack.start_worker(node=f"{stack.settings.node}b", global_limit=2, per_user_limit=1)
    done = [
        mgr.wait(user, run_id, timeout=600)
        for user, run_id in zip(["ann", "ann", "ben", "ben", "cat", "cat"], runs, strict=False)
    ]

    # Then: never more than 2 at once, never 2 of one user at once, and cat is served before ann's second
    assert all(r.status is RunStatus.COMPLETED for r in done), [r.reason for r in done]
    spans = sorted((r.started_at, r.finished_at, r.user_id) for r in done)
    for start, _, user in spans:
        running = [s for s in spans if s[0] <= start < s[1]]
        assert len(running) <= 2
        assert sum(1 for s in running if s[2] == user) <= 1
    assert {user for _, _, user in spans[:3]} == {"ann", "ben", "cat"}


def test_a_message_delivered_twice_never_trains_a_run_twice(stack: Stack, shapes: Path):
    # Given: two idle workers on one queue and a training under way on one of them
    stack.start_worker()
    stack.start_worker()
    mgr = stack.manager()
    training = train_followed(mgr, "erin", shapes, 4, "long")
    run_id = training.run_id
    training.wait_for_epoch(1)

    # When: the same attempt's message arrives again (a redelivery or a duplicate publish)
    run = mgr.get_run("erin", run_id)
    mgr._ctx.send_run(run, run.queue, run.attempt)
    done = mgr.wait("erin", run_id, timeout=300)

    # Then: the other worker refused the copy, and the run trained once
    assert done.status is RunStatus.COMPLETED, done.reason
    assert transitions(mgr, run_id) == ["queued", "dispatched", "running", "completed"]
    logs = "".join(p.read_text() for p in stack.settings.state_dir.glob("worker-*.log"))
    assert len(re.findall(r"Task ytm\.train\[[0-9a-f-]+\] received", logs)) == 2
    assert "succeeded in" in logs and "'skipped: " in logs
