"""The train task: idempotent and resumable; each message carries the attempt it is for."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import redis

from yolo_task_manager import durable
from yolo_task_manager.broker.lease import Lease
from yolo_task_manager.datasets import inspect_dataset, write_training_data
from yolo_task_manager.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidTransition,
    NotFound,
    StorageError,
    YoloTaskManagerError,
)
from yolo_task_manager.ids import resolve_inside
from yolo_task_manager.model_yaml import check_model_yaml
from yolo_task_manager.pickles import check_checkpoint
from yolo_task_manager.values import ModelProvenance, Run, RunStatus
from yolo_task_manager.workers.context import WorkerContext
from yolo_task_manager.workers.protocol import TrainingJob, TrainingResult
from yolo_task_manager.workers.supervisor import Outcome, TrainingSupervisor

__all__ = ["execute_run"]

log = logging.getLogger(__name__)


def execute_run(ctx: WorkerContext, run_id: str, attempt: int) -> str:
    """Run ``attempt`` of ``run_id`` unless it is stale, finished, or trained elsewhere; say what happened."""
    try:
        run = ctx.registry.get_run(run_id)
    except NotFound:
        return f"skipped: unknown run {run_id}"
    if run.status is not RunStatus.DISPATCHED or run.attempt != attempt:
        return f"skipped: run is {run.status.value} at attempt {run.attempt}, message is for attempt {attempt}"
    lease = Lease(ctx.redis, ctx.keys, run_id, ctx.settings.lease_ttl, attempt=attempt)
    if not lease.acquire():
        return "skipped: another worker holds the run's lease"
    try:
        try:
            run = ctx.transition(run_id, RunStatus.RUNNING, attempt=attempt, queue=ctx.queue)
        except InvalidTransition as exc:
            return f"skipped: {exc}"
        try:
            outcome = _train(ctx, run, lease)
        except Exception as exc:  # noqa: BLE001 - the run must end with the real cause, not "worker lost"
            log.exception("run %s: the worker failed", run_id)
            tail = "".join(traceback.format_exception(exc)[-4:])
            outcome = Outcome(status=RunStatus.FAILED, reason=f"the worker failed: {type(exc).__name__}: {exc}\n{tail}")
        return _finish(ctx, run, outcome).value
    finally:
        try:
            lease.release()
            if not ctx.shutting_down.is_set():
                ctx.dispatcher.tick()
        except redis.exceptions.RedisError as exc:  # the lease expires by itself; presence ticks again
            log.warning("run %s: after the run, Redis said: %s", run_id, exc)


def _train(ctx: WorkerContext, run: Run, lease: Lease) -> Outcome:
    run_dir = ctx.storage.run_dir(run.user_id, run.run_id)
    area = ctx.settings.storage_root / run.user_id
    # Checked again here, as the producer did: the folder may have become a link elsewhere since.
    readable = ctx.settings.readable_dirs(run.user_id)
    shared = next((s for s in readable if Path(run.dataset_dir).is_relative_to(s)), None)
    try:
        with lease.kept(ctx.settings.heartbeat_interval):
            dataset = inspect_dataset(run.dataset_dir, area=shared or area)
            data = write_training_data(dataset, run_dir)
    except InvalidInput as exc:
        return Outcome(status=RunStatus.FAILED, reason=f"dataset check failed on the worker: {exc}")
    try:
        model = _base_model(run, ctx.settings.pretrained_dir, run_dir, area)
    except InvalidInput as exc:
        return Outcome(status=RunStatus.FAILED, reason=f"base model check failed on the worker: {exc}")
    try:
        # The run folder is on a shared volume: what an earlier attempt promoted may not be what it wrote.
        for left in (run_dir / "train" / "weights" / "last.pt", run_dir / "train" / "weights" / "best.pt"):
            if left.is_file():
                check_checkpoint(left)
    except InvalidInput as exc:
        return Outcome(status=RunStatus.FAILED, reason=f"checkpoint check failed on the worker: {exc}")
    job = TrainingJob(
        run_id=run.run_id,
        attempt=run.attempt,
        spec=run.spec,
        model=model,
        data=data,
        torch_device=ctx.torch_device,
        save_dir=str(run_dir / "train"),  # the published place; the supervisor trains in the attempt's folder
        silence_limit=ctx.settings.silence_limit,
        save_wait=ctx.settings.save_wait,
    )
    # Read-only for the child: the dataset's folders, and a model file from outside the run (pretrained/).
    outside = Path(model).is_absolute() and run_dir not in Path(model).parents
    data_path = (dataset.training_data or {}).get("path")
    roots = {dataset.root, *([Path(data_path)] if isinstance(data_path, str) and Path(data_path).is_dir() else [])}
    inputs = [*sorted(roots), *([Path(model)] if outside else [])]
    return TrainingSupervisor(ctx, run, lease, job, run_dir, inputs=inputs).supervise()


def _base_model(run: Run, pretrained_dir: Path, run_dir: Path, area: Path) -> str:
    """What the training loads. A checkpoint or yaml from outside the operator's folder is copied into the run
    and checked there, so the file that is loaded is the file that was checked."""
    source = Path(run.base_model)
    if not source.is_absolute() or source.parent == pretrained_dir:
        return run.base_model  # a built-in yaml, or the operator's own weights
    real = resolve_inside(source, area)
    if real is None:
        raise InvalidInput(f"{source} does not exist (or is not yours): the base model is gone")
    copy = run_dir / ("base.pt" if source.suffix == ".pt" else f"base{source.suffix}")
    if not copy.is_file():
        try:
            durable.copy_file(real, copy)
        except StorageError as exc:
            raise InvalidInput(f"cannot copy the base model on this worker: {exc}") from None
    if copy.suffix == ".pt":
        check_checkpoint(copy)
    else:
        check_model_yaml(copy)
    return str(copy)


def _finish(ctx: WorkerContext, run: Run, outcome: Outcome) -> RunStatus:
    """Apply the outcome as the run's transition (a completed run first publishes its model); return the state
    it was applied as (a failure that is retried is ``interrupted``)."""
    model_name: dict[str, str] = {}
    if outcome.status is RunStatus.COMPLETED and outcome.result is not None:
        try:
            _publish_model(ctx, run, outcome.result)
            model_name["model_name"] = run.run_name
        except YoloTaskManagerError as exc:
            outcome = Outcome(status=RunStatus.FAILED, reason=f"publishing the model failed: {exc}")
    status, reason, counters = _counted(ctx, run, outcome)
    try:
        # The attempt guard leaves the run alone if another attempt owns it now.
        ctx.transition(run.run_id, status, attempt=run.attempt, reason=reason, **model_name, **counters)
        if status is RunStatus.INTERRUPTED:
            ctx.dispatcher.requeue(run.run_id)
    except InvalidTransition as exc:
        log.warning("run %s: outcome %s not applied: %s", run.run_id, outcome.status.value, exc)
    return status


def _counted(ctx: WorkerContext, run: Run, outcome: Outcome) -> tuple[RunStatus, str | None, dict[str, int]]:
    """The transition that applies ``outcome``, and the counter it bumps: a failure of the training on its own
    is retried until ``max_attempts`` such failures; an interruption counts as one worker loss."""
    if outcome.status is RunStatus.FAILED and outcome.retryable:
        failed, limit = run.failed_attempts + 1, ctx.settings.max_attempts
        if failed < limit:
            reason = f"{outcome.reason}; retrying (failed attempt {failed} of max_attempts={limit})"
            return RunStatus.INTERRUPTED, reason, {"failed_attempts": failed}
        reason = f"{outcome.reason}; gave up after {failed} failed attempts (max_attempts={limit})"
        return RunStatus.FAILED, reason, {"failed_attempts": failed}
    if outcome.status is RunStatus.INTERRUPTED:
        return outcome.status, outcome.reason, {"worker_losses": run.worker_losses + 1}
    return outcome.status, outcome.reason, {}


def _publish_model(ctx: WorkerContext, run: Run, result: TrainingResult) -> None:
    meta = ModelProvenance(task=result.task, base_model=run.base_model, run_id=run.run_id, imgsz=result.imgsz,
                           metrics=result.metrics, trained_on=run.queue)  # fmt: skip
    try:
        best = Path(result.best)
        plots = sorted(p for p in best.parent.parent.iterdir() if p.suffix in (".png", ".jpg") and p.is_file())
        ctx.storage.save_model(run.user_id, best, run.run_name, result.labels, meta=meta, plots=plots)
    except AlreadyExists:
        # A previous attempt published it and died before recording the transition.
        existing = ctx.storage.get_model(run.user_id, run.run_name)
        if existing.run_id != run.run_id:
            raise
