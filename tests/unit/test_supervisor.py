"""``TrainingSupervisor`` and ``execute_run`` driven with a fake training child that speaks the protocol.

Like rq's tests of its work horse: a tiny real subprocess per case, fakeredis, a SQLite registry, no torch,
and no sleeping through real timeouts (intervals are a few tens of milliseconds).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import psutil
import pytest

from yolo_task_manager.broker.lease import Lease
from yolo_task_manager.datasets.sample import make_sample_dataset
from yolo_task_manager.settings import Settings
from yolo_task_manager.tasks.train import execute_run
from yolo_task_manager.values import EventType, Run, RunSpec, RunStatus
from yolo_task_manager.workers.context import WorkerContext
from yolo_task_manager.workers.protocol import TrainingJob
from yolo_task_manager.workers.supervisor import Outcome, TrainingSupervisor

S = RunStatus

FAKE_CHILD = """
import os, sys, time
from yolo_task_manager.workers.protocol import *
from yolo_task_manager.workers.sandbox import watch_control

job_file, fd, control, behaviour = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = os.fdopen(fd, "w", buffering=1)
job = TrainingJob.from_json(open(job_file).read())

def send(message):
    out.write(encode(message))
    out.flush()

if behaviour != "ignore-stop":
    watch_control(control, lambda: os._exit(EXIT_STOPPED), lambda: os._exit(EXIT_ORPHANED))
if behaviour == "finish":
    out.write("not a message\\n")
    for epoch in (1, 2):
        send(EpochMetrics(epoch=epoch, epochs=2, metrics={"train/box_loss": 1.0 / epoch}))
    os.makedirs(job.save_dir + "/weights", exist_ok=True)
    with open(job.save_dir + "/weights/best.pt", "wb") as f:
        f.write(b"weights")
    send(TrainingResult(best=job.save_dir + "/weights/best.pt", task=job.spec.task, labels=["a"], imgsz=64))
    sys.exit(EXIT_OK)
if behaviour == "crash":
    send(ChildFailed(message="ValueError: bad labels", traceback="Traceback (most recent call last): ..."))
    sys.exit(EXIT_FAILED)
send(LogLine(message="ready"))
if behaviour == "checkpoint":  # saves one checkpoint once the test says go, as train_child does (by rename)
    go = os.path.join(os.path.dirname(job_file), "go")
    while not os.path.exists(go):
        time.sleep(0.01)
    os.makedirs(job.save_dir + "/weights", exist_ok=True)
    with open(job.save_dir + "/weights/.last.pt.tmp", "wb") as f:
        f.write(b"checkpoint of attempt %d" % job.attempt)
    os.replace(job.save_dir + "/weights/.last.pt.tmp", job.save_dir + "/weights/last.pt")
    send(CheckpointSaved(epoch=1, epochs=2, path=job.save_dir + "/weights/last.pt"))
    send(EpochMetrics(epoch=1, epochs=2, metrics={"train/box_loss": 1.0}))
while True:
    time.sleep(0.01)
"""


def fake_child(behaviour: str) -> Callable[[Path, int], list[str]]:
    return lambda job_file, fd, control: [sys.executable, "-c", FAKE_CHILD, str(job_file), str(fd), str(control),
                                          behaviour]  # fmt: skip


@pytest.fixture
def worker_settings(tmp_path: Path) -> Settings:
    return Settings(
        storage_root=tmp_path / "root", redis_url="redis://unused", key_prefix="test", lease_ttl=2,
        heartbeat_interval=0.05, stop_grace=0.5, sandbox="auto",
    )  # fmt: skip


@pytest.fixture
def make_ctx(worker_settings: Settings) -> Iterator[Callable[[str], WorkerContext]]:
    made: list[WorkerContext] = []
    server = fakeredis.FakeServer()

    def _make(behaviour: str) -> WorkerContext:
        client = fakeredis.FakeRedis(server=server)
        ctx = WorkerContext(worker_settings, "cpu", client=client, training_command=fake_child(behaviour))
        made.append(ctx)
        return ctx

    yield _make
    for ctx in made:
        ctx.close()


def _running(ctx: WorkerContext, **spec: object) -> tuple[Run, Lease]:
    fields: dict[str, object] = dict(user_id="alice", run_name="r1", base_model="yolov8n.yaml", dataset_dir="/d",
                                     task="detect", epochs=2, device="cpu")  # fmt: skip
    run = ctx.registry.create_run(RunSpec(**{**fields, **spec}))  # type: ignore[arg-type]
    attempt = ctx.registry.mark_dispatched(run.run_id, ctx.queue)
    lease = Lease(ctx.redis, ctx.keys, run.run_id, ctx.settings.lease_ttl, attempt=attempt or 0)
    assert lease.acquire()
    return ctx.transition(run.run_id, S.RUNNING, attempt=attempt, queue=ctx.queue), lease


def _supervisor(ctx: WorkerContext, run: Run, lease: Lease) -> TrainingSupervisor:
    run_dir = ctx.storage.run_dir(run.user_id, run.run_id)
    job = TrainingJob(run_id=run.run_id, attempt=run.attempt, spec=run.spec, model=run.base_model,
                      data="/d/data.yaml", torch_device="cpu", save_dir=str(run_dir / "train"))  # fmt: skip
    return TrainingSupervisor(ctx, run, lease, job, run_dir)


class Supervising:
    """One attempt supervised in a thread, from the moment its child said it is ready (its signals are set)."""

    def __init__(self, ctx: WorkerContext, run: Run, lease: Lease) -> None:
        sup = _supervisor(ctx, run, lease)
        self.outcome: list[Outcome] = []
        self.thread = threading.Thread(target=lambda: self.outcome.append(sup.supervise()))
        self.thread.start()
        deadline = time.monotonic() + 30
        while not any(e.type is EventType.LOG for e in ctx.bus.history(run.run_id)):
            assert time.monotonic() < deadline and self.thread.is_alive(), "the fake child never said it was ready"
            time.sleep(0.01)
        # The child's pid as this machine sees it (in the sandbox it is pid 1 of its own namespace).
        job_file = str(sup.run_dir / "spec.json")
        self.child = next(p for p in psutil.process_iter(["cmdline"]) if job_file in (p.info["cmdline"] or [])
                          and "-c" in (p.info["cmdline"] or []))  # fmt: skip

    def result(self) -> list[Outcome]:
        self.thread.join(30)
        return self.outcome


def _alive(child: psutil.Process) -> bool:
    try:
        return child.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------------------- how a child ends


def test_a_child_that_finishes_completes_with_its_result_and_every_epoch_recorded_once_in_order(make_ctx) -> None:
    # Given a child that reports two epochs (after one garbled line) and a result
    ctx = make_ctx("finish")
    run, lease = _running(ctx)

    # When it is supervised
    outcome = _supervisor(ctx, run, lease).supervise()

    # Then the attempt completed with the child's result, and each epoch is in the registry and the stream once
    assert outcome.status is S.COMPLETED and outcome.result is not None
    assert (outcome.result.task, outcome.result.labels, outcome.result.imgsz) == ("detect", ["a"], 64)
    assert [e for e, _ in ctx.registry.get_metrics(run.run_id)] == [1, 2]
    assert [e.epoch for e in ctx.bus.history(run.run_id) if e.type is EventType.METRICS] == [1, 2]


def test_a_child_that_reports_an_error_fails_with_its_message_and_traceback(make_ctx) -> None:
    # Given a child that fails and says why
    ctx = make_ctx("crash")
    run, lease = _running(ctx)

    # When it is supervised
    outcome = _supervisor(ctx, run, lease).supervise()

    # Then the run fails with the child's own words
    assert outcome.status is S.FAILED
    assert outcome.reason is not None and outcome.reason.startswith("ValueError: bad labels\nTraceback")
    # And it is not retried: a reported error would happen again
    assert not outcome.retryable


def test_a_child_killed_like_the_oom_killer_does_fails_with_a_hint(make_ctx) -> None:
    # Given a running child
    ctx = make_ctx("run")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)

    # When it is killed by SIGKILL from outside, as the kernel's out-of-memory killer does
    attempt.child.kill()
    (outcome,) = attempt.result()

    # Then the reason names the signal and the likely culprit
    assert outcome.status is S.FAILED
    assert "terminated unexpectedly by SIGKILL" in (outcome.reason or "")
    assert "out-of-memory killer" in (outcome.reason or "")
    # And another attempt may be tried (up to max_attempts): nothing reported an error
    assert outcome.retryable


def test_a_stop_request_is_passed_to_the_child_and_the_attempt_ends_stopped(make_ctx) -> None:
    # Given a running child that honours a stop
    ctx = make_ctx("honour-stop")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)

    # When its user asks it to stop
    ctx.stops.request(run.run_id)
    outcome = attempt.result()

    # Then it ended stopped
    assert outcome == [Outcome(status=S.STOPPED, reason="stopped by user")]


def test_a_child_that_ignores_a_stop_is_killed_after_the_grace_period(make_ctx) -> None:
    # Given a running child that ignores stop requests
    ctx = make_ctx("ignore-stop")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)

    # When its user asks it to stop
    asked = time.monotonic()
    ctx.stops.request(run.run_id)
    outcome = attempt.result()

    # Then it was killed once stop_grace had passed, and the attempt ends stopped
    assert time.monotonic() - asked >= ctx.settings.stop_grace
    assert outcome == [Outcome(status=S.STOPPED, reason="stopped by user")]
    assert not _alive(attempt.child)


def test_a_lost_lease_kills_the_child_and_the_attempt_is_interrupted(make_ctx) -> None:
    # Given a running child
    ctx = make_ctx("run")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)

    # When another attempt takes the run's lease (this worker froze past its TTL, say)
    ctx.redis.set(ctx.keys.lease(run.run_id), "someone else's token")
    outcome = attempt.result()

    # Then this attempt is abandoned: its child is killed and the run is interrupted, saying why
    assert outcome[0].status is S.INTERRUPTED
    assert "lease lost" in (outcome[0].reason or "")
    assert not _alive(attempt.child)


def test_a_child_past_its_time_limit_is_asked_to_stop_and_times_out(make_ctx) -> None:
    # Given a run allowed 0.2 s whose child would go on for ever
    ctx = make_ctx("run")
    run, lease = _running(ctx, max_duration=0.2)

    # When it is supervised
    outcome = _supervisor(ctx, run, lease).supervise()

    # Then it timed out, naming the limit
    assert outcome == Outcome(status=S.TIMED_OUT, reason="ran past max_duration=0.2s")


def test_a_worker_shutting_down_interrupts_its_training(make_ctx) -> None:
    # Given a running child
    ctx = make_ctx("run")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)

    # When the worker begins a warm shutdown
    ctx.shutting_down.set()
    outcome = attempt.result()

    # Then the attempt is interrupted (to be requeued)
    assert outcome == [Outcome(status=S.INTERRUPTED, reason="worker shut down")]


# ---------------------------------------------------------------------------- execute_run's guards


def test_a_message_for_an_unknown_run_is_skipped(make_ctx) -> None:
    ctx = make_ctx("finish")
    assert execute_run(ctx, "0" * 32, 1) == f"skipped: unknown run {'0' * 32}"


def test_a_stale_attempt_is_skipped_and_leaves_the_run_alone(make_ctx) -> None:
    # Given a run dispatched twice (attempt 2 is current)
    ctx = make_ctx("finish")
    run = ctx.registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml", dataset_dir="/d",
                                          task="detect", epochs=1, device="cpu"))  # fmt: skip
    ctx.registry.mark_dispatched(run.run_id, ctx.queue)
    ctx.registry.record_transition(run.run_id, S.QUEUED, attempt=1, reason="lost")
    ctx.registry.mark_dispatched(run.run_id, ctx.queue)

    # When attempt 1's message arrives late
    said = execute_run(ctx, run.run_id, 1)

    # Then it is skipped, and the run still waits for attempt 2
    assert said == "skipped: run is dispatched at attempt 2, message is for attempt 1"
    assert (ctx.registry.get_run(run.run_id).status, ctx.registry.get_run(run.run_id).attempt) == (S.DISPATCHED, 2)


def test_a_run_whose_lease_another_worker_holds_is_skipped(make_ctx) -> None:
    # Given a dispatched run whose lease is held elsewhere
    ctx = make_ctx("finish")
    run = ctx.registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml", dataset_dir="/d",
                                          task="detect", epochs=1, device="cpu"))  # fmt: skip
    attempt = ctx.registry.mark_dispatched(run.run_id, ctx.queue)
    assert attempt is not None and Lease(ctx.redis, ctx.keys, run.run_id, 60).acquire()

    # When its message is delivered here
    said = execute_run(ctx, run.run_id, attempt)

    # Then this worker does not train it
    assert said == "skipped: another worker holds the run's lease"
    assert ctx.registry.get_run(run.run_id).status is S.DISPATCHED


def test_a_run_stopped_between_the_read_and_the_start_is_skipped_and_its_lease_released(
    make_ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a dispatched run that its user stops just after the worker read it as queued
    ctx = make_ctx("finish")
    run = ctx.registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml", dataset_dir="/d",
                                          task="detect", epochs=1, device="cpu"))  # fmt: skip
    attempt = ctx.registry.mark_dispatched(run.run_id, ctx.queue)
    seen = ctx.registry.get_run(run.run_id)
    ctx.transition(run.run_id, S.STOPPED, reason="stopped by user before it started")
    monkeypatch.setattr(ctx.registry, "get_run", lambda run_id, user_id=None: seen)

    # When the worker goes on to start it
    said = execute_run(ctx, run.run_id, attempt or 0)

    # Then the guarded transition refuses, the run stays stopped, and the lease is free again
    assert said.startswith("skipped: run") and "cannot become running" in said
    monkeypatch.undo()
    assert ctx.registry.get_run(run.run_id).status is S.STOPPED
    assert not ctx.redis.exists(ctx.keys.lease(run.run_id))


def test_execute_run_trains_through_the_child_and_publishes_the_model(make_ctx, tmp_path: Path) -> None:
    # Given a dispatched run on a real (generated) dataset, and a child that finishes
    ctx = make_ctx("finish")
    dataset = make_sample_dataset(ctx.settings.storage_root / "a" / "data", train=2, val=2, size=32)
    run = ctx.registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml",
                                          dataset_dir=str(dataset), task="detect", epochs=2, device="cpu"))  # fmt: skip
    attempt = ctx.registry.mark_dispatched(run.run_id, ctx.queue)

    # When its message is executed
    said = execute_run(ctx, run.run_id, attempt or 0)

    # Then it completed, the model is published under the run's name, and the lease is released
    assert said == "completed"
    done = ctx.registry.get_run(run.run_id)
    assert (done.status, done.model_name, done.last_epoch) == (S.COMPLETED, "r", 2)
    assert ctx.storage.get_model("a", "r").labels == ("a",)
    assert not ctx.redis.exists(ctx.keys.lease(run.run_id))
    assert [t for _, t, _, _ in ctx.registry.get_transitions(run.run_id)] == [
        "queued", "dispatched", "running", "completed"
    ]  # fmt: skip


# ---------------------------------------------------------------------------- fencing


def test_a_saved_checkpoint_is_promoted_to_the_run_s_published_place(make_ctx) -> None:
    # Given a running child in its attempt's folder
    ctx = make_ctx("checkpoint")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)
    run_dir = ctx.storage.run_dir(run.user_id, run.run_id)

    # When it saves a checkpoint
    (run_dir / "go").touch()
    published = run_dir / "train" / "weights" / "last.pt"
    deadline = time.monotonic() + 30
    while not published.exists():
        assert time.monotonic() < deadline, "the checkpoint was never promoted"
        time.sleep(0.01)
    ctx.stops.request(run.run_id)
    (outcome,) = attempt.result()

    # Then the run's published checkpoint is the attempt's, and the attempt's folder is gone
    assert published.read_bytes() == f"checkpoint of attempt {run.attempt}".encode()
    assert outcome.status is S.STOPPED
    assert not (run_dir / "attempts" / str(run.attempt)).exists()


def test_an_attempt_fenced_off_promotes_nothing_reports_nothing_and_discards_its_folder(make_ctx) -> None:
    # Given a running child whose worker froze, and attempt 2 that took the run meanwhile
    ctx = make_ctx("checkpoint")
    run, lease = _running(ctx)
    attempt = Supervising(ctx, run, lease)
    run_dir = ctx.storage.run_dir(run.user_id, run.run_id)
    ctx.redis.set(ctx.keys.lease(run.run_id), "attempt 2's token")
    ctx.redis.set(ctx.keys.fence(run.run_id), run.attempt + 1)

    # When the child saves a checkpoint and reports an epoch
    (run_dir / "go").touch()
    (outcome,) = attempt.result()

    # Then nothing reached the published place, the registry or the stream, and the attempt is abandoned
    assert outcome.status is S.INTERRUPTED and "lease lost" in (outcome.reason or "")
    assert not (run_dir / "train" / "weights" / "last.pt").exists()
    assert ctx.registry.get_metrics(run.run_id) == []
    assert not [e for e in ctx.bus.history(run.run_id) if e.type in (EventType.METRICS, EventType.CHECKPOINT)]
    assert not (run_dir / "attempts" / str(run.attempt)).exists()
    assert not _alive(attempt.child)
