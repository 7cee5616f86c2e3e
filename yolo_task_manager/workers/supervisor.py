"""Runs the training child for one attempt: relays its events, heartbeats, stops, times out, classifies.

Like rq's work horse: one child per job in its own process group (and sandbox, and cgroups); the parent
keeps the lease alive, enforces stop and time limits (then kills the group), and says how the child ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from yolo_task_manager import durable
from yolo_task_manager.broker.lease import Lease
from yolo_task_manager.errors import DatabaseUnavailable, StorageError
from yolo_task_manager.values import EventType, Run, RunStatus
from yolo_task_manager.workers.attempts import AttemptFolder
from yolo_task_manager.workers.children import start_child
from yolo_task_manager.workers.context import WorkerContext
from yolo_task_manager.workers.protocol import (
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_STOPPED,
    JOB_FILE,
    CheckpointSaved,
    ChildCommand,
    ChildFailed,
    EpochMetrics,
    LogLine,
    Message,
    ProtocolError,
    TrainingJob,
    TrainingResult,
    decode,
)
from yolo_task_manager.workers.sandbox import SandboxedProcess, keep_alive, request_stop

__all__ = ["Outcome", "TrainingSupervisor"]

RECORD = "_record"
"""Marks a queued metrics event whose registry row is still to be written."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How an attempt ended; ``status`` is the run's next state."""

    status: RunStatus
    reason: str | None = None
    result: TrainingResult | None = None
    retryable: bool = False
    """A failure of the training on its own, without a reported error (a signal, an unexplained exit): another
    attempt may succeed, up to ``max_attempts``."""


class TrainingSupervisor:
    """Supervises one attempt of one run on this worker.

    Args:
        inputs: what the child reads besides its run folder (the dataset, a pretrained checkpoint), read-only.
        clock: monotonic seconds, for the time limit and the stop grace period.
    """

    def __init__(
        self,
        ctx: WorkerContext,
        run: Run,
        lease: Lease,
        job: TrainingJob,
        run_dir: Path,
        *,
        inputs: Sequence[Path] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.run = run
        self.lease = lease
        self.run_dir = run_dir
        self.folder = AttemptFolder(run_dir, run.attempt)
        self.job = dataclasses.replace(job, save_dir=str(self.folder.save_dir))
        self._command: ChildCommand = ctx.training_child
        self._clock = clock
        self._control = -1  # the write end of the child's control pipe
        self._inputs = tuple(inputs)
        self._outbox: list[dict[str, Any]] = []
        self._result: TrainingResult | None = None
        self._error: ChildFailed | None = None
        self._asked: RunStatus | None = None  # why we asked the child to stop: STOPPED, TIMED_OUT, INTERRUPTED
        self._asked_at = 0.0
        self._lease_lost: str | None = None  # why this worker no longer owns the run
        self._beat_lock = threading.Lock()  # one heartbeat at a time: the beat thread's, or _fresh's
        self._storage_failed: str | None = None  # why promoting the attempt's files failed

    def supervise(self) -> Outcome:
        """Train the attempt in its own folder, promote what it saves while the lease holds, and say how it
        ended; the attempt's folder is gone afterwards (what it was worth is promoted)."""
        try:
            return self._supervise()
        finally:
            if self._lease_lost:
                log.warning("run %s: attempt %s fenced off (%s): discarding %s", self.run.run_id, self.run.attempt,
                            self._lease_lost, self.folder.path)  # fmt: skip
            self.folder.discard()

    def _supervise(self) -> Outcome:
        try:
            self.folder.seed()
            job_file = self.run_dir / JOB_FILE
            durable.write_text(job_file, self.job.to_json())
        except StorageError as exc:
            return Outcome(status=RunStatus.FAILED, reason=f"cannot start the attempt: {exc}")
        read_fd, write_fd = os.pipe()
        control_r, self._control = os.pipe()
        try:
            child = start_child(
                self._command(job_file, write_fd, control_r), settings=self.ctx.settings,
                sandboxed=self.ctx.sandboxed, job_dir=self.folder.path, log_path=self.run_dir / "train.log",
                pass_fds=(write_fd, control_r), read_only=(self.run_dir, *self._inputs), gpu=self.ctx.device != "cpu",
            )  # fmt: skip
        except BaseException:
            os.close(self._control)
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            os.close(control_r)
        beating = threading.Event()
        beat = threading.Thread(target=self._beat, args=(beating,), name=f"ytm-beat-{self.run.run_id}", daemon=True)
        beat.start()
        try:
            self._loop(child, read_fd)
        finally:
            beating.set()
            beat.join()
            os.close(read_fd)
            child.close()  # also any data-loader process the child left behind
            os.close(self._control)
            self._control = -1
            # Every metrics event goes out before the run's final status, even across a Redis or database restart.
            self._drain()
        self._fresh()  # a worker that froze while its child ran finds out here whether the run is still its own
        outcome = self._classify(child.returncode, child.memory_exhausted())
        if outcome.status is RunStatus.COMPLETED and outcome.result is not None:
            return self._promote_result(outcome.result)
        return outcome

    def _loop(self, child: SandboxedProcess, read_fd: int) -> None:
        settings = self.ctx.settings
        started = self._clock()
        next_beat = started
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(read_fd, selectors.EVENT_READ)
            while True:
                if sel.select(timeout=min(1.0, settings.heartbeat_interval)):
                    chunk = os.read(read_fd, 65536)
                    if not chunk:  # the child closed its end: it exited, or is about to
                        try:
                            child.process.wait(settings.stop_grace)
                        except subprocess.TimeoutExpired:  # a stuck sandbox must not stop the heartbeat for good
                            log.warning("run %s: the training closed its pipe but did not exit: killing it",
                                        self.run.run_id)  # fmt: skip
                            child.kill()
                        return
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            self._receive(line)
                now = self._clock()
                if now >= next_beat:
                    next_beat = now + settings.heartbeat_interval
                    self._flush()
                    if self._lease_lost or self._storage_failed:
                        child.kill()
                    elif self._asked is None:
                        self._check_requests(now - started)
                if self._asked is not None and now - self._asked_at > settings.stop_grace:
                    log.warning(
                        "run %s ignored the stop request for %ss: killing it", self.run.run_id, settings.stop_grace
                    )
                    child.kill()

    def _ask(self, why: RunStatus) -> None:
        """Ask the child to stop at its next batch, over its control pipe (signals do not cross the sandbox)."""
        self._asked, self._asked_at = why, self._clock()
        request_stop(self._control)

    def _check_requests(self, elapsed: float) -> None:
        if self.ctx.shutting_down.is_set():
            self._ask(RunStatus.INTERRUPTED)
            return
        max_duration = self.run.max_duration
        if max_duration is not None and elapsed > max_duration:
            self._ask(RunStatus.TIMED_OUT)
            return
        try:
            if self.ctx.stops.is_requested(self.run.run_id):
                self._ask(RunStatus.STOPPED)
        except redis.exceptions.ConnectionError:
            pass  # Redis is restarting: ask again at the next beat

    def _beat(self, done: threading.Event) -> None:
        """Renew the lease and keep the child alive from a thread of its own, so that a loop busy with a slow
        fsync or a locked database does not make the child quit for want of a keep-alive."""
        while not done.wait(self.ctx.settings.heartbeat_interval):
            try:
                self._heartbeat()
            except Exception:  # noqa: BLE001 - a failed beat sends no keep-alive: the child quits in time
                log.exception("run %s: heartbeat failed", self.run.run_id)

    def _heartbeat(self) -> None:
        with self._beat_lock:
            lost = self.lease.heartbeat(self._still_ours)
            if lost and not self._lease_lost:
                log.error("run %s: %s; abandoning this attempt", self.run.run_id, lost)
                self._lease_lost = lost
            # Only while the lease surely outlives the child: one that stops hearing this quits within
            # silence_limit (+ save_wait), before the lease can expire (Settings.silence_limit).
            window = self.ctx.settings.keep_alive_window
            if not self._lease_lost and self._control >= 0 and self._clock() - self.lease.renewed_at < window:
                keep_alive(self._control)

    def _still_ours(self) -> bool:
        run = self.ctx.registry.get_run(self.run.run_id)
        return run.status is RunStatus.RUNNING and run.attempt == self.run.attempt

    def _fresh(self) -> bool:
        """Whether the lease is still ours, renewing it first if the last renewal is old (this worker may have
        been frozen: nothing it hears from a child then may reach the run)."""
        if not self._lease_lost and self._clock() - self.lease.renewed_at >= self.ctx.settings.keep_alive_window:
            self._heartbeat()
        return not self._lease_lost

    def _promote(self, extra: tuple[str, ...] = ()) -> bool:
        """Promote the attempt's saved files if the lease still holds; a refusal ends the attempt."""
        if self._lease_lost or self._storage_failed:
            return False
        try:
            if self.folder.promote(self.lease.holds, min_left=self.lease.ttl / 4, extra=extra):
                return True
        except StorageError as exc:
            log.error("run %s: %s", self.run.run_id, exc)
            self._storage_failed = str(exc)
            return False
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("run %s: checkpoint not promoted, Redis said: %s", self.run.run_id, exc)
            return False
        self._heartbeat()  # fenced off, or its lease is about to expire: which one, the heartbeat says
        return False

    def _promote_result(self, result: TrainingResult) -> Outcome:
        """Promote a finished attempt's checkpoints (and plots), then point its result at the promoted best."""
        save_dir = self.folder.save_dir
        plots = tuple(p.name for p in save_dir.glob("*") if p.suffix in (".png", ".jpg") and p.is_file())
        beats = int(self.lease.ttl / self.ctx.settings.heartbeat_interval) + 2  # Redis may be restarting
        for _ in range(beats):
            if self._promote(plots):
                best = Path(result.best)
                if best.is_relative_to(save_dir):
                    best = self.folder.published / best.relative_to(save_dir)
                return Outcome(status=RunStatus.COMPLETED, result=dataclasses.replace(result, best=str(best)))
            if self._lease_lost or self._storage_failed:
                break
            time.sleep(self.ctx.settings.heartbeat_interval)
            self._heartbeat()
        if self._storage_failed:
            return Outcome(status=RunStatus.FAILED, reason=f"the training finished, but {self._storage_failed}")
        reason = self._lease_lost or "the training finished, but its lease could not be confirmed in Redis"
        return Outcome(status=RunStatus.INTERRUPTED, reason=reason)

    def _receive(self, line: bytes) -> None:
        try:
            message = decode(line)
        except ProtocolError as exc:
            log.warning("run %s: the training child sent %s", self.run.run_id, exc)
            return
        self._handle(message)
        self._flush()

    def _handle(self, message: Message) -> None:
        if not self._fresh():
            log.warning("run %s: dropped %s from a fenced-off attempt", self.run.run_id, type(message).__name__)
            return
        if isinstance(message, EpochMetrics):
            # Both sides drop an epoch they already have: a resumed child re-sends its checkpoint's epochs,
            # whose events a killed worker may have recorded but never published (or never read).
            # The registry row is written with the event, in ``_flush``: a database restarting meanwhile delays
            # both, in order, instead of ending the attempt.
            self.ctx.report_progress(message.epoch, message.epochs, message.metrics.get("fitness"))
            self._outbox.append({"type": EventType.METRICS, "epoch": message.epoch, "epochs": message.epochs,
                                 "metrics": message.metrics, RECORD: True})  # fmt: skip
        elif isinstance(message, CheckpointSaved):
            if not self._promote() and self._lease_lost:
                return  # fenced off: the checkpoint is not the run's
            self._outbox.append({"type": EventType.CHECKPOINT, "epoch": message.epoch, "epochs": message.epochs})
        elif isinstance(message, LogLine):
            self._outbox.append({"type": EventType.LOG, "reason": message.message})
        elif isinstance(message, TrainingResult):
            self._result = message
        elif isinstance(message, ChildFailed):
            self._error = message

    def _flush(self) -> None:
        """Publish queued events in order. Each is stored once (the bus pushes it to Redis when Redis is back);
        a registry outage keeps the rest for the next try."""
        while self._outbox:
            event = self._outbox[0]
            try:
                if event.pop(RECORD, False):
                    try:
                        self.ctx.registry.record_metrics(self.run.run_id, event["epoch"], event["metrics"])
                    except DatabaseUnavailable:
                        event[RECORD] = True
                        raise
                self.ctx.bus.publish(self.run.run_id, self.run.user_id, **event)
            except DatabaseUnavailable:
                return
            self._outbox.pop(0)
        with contextlib.suppress(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self.ctx.bus.push()

    def _drain(self) -> None:
        """Flush until the outbox is empty, for up to the worker's publish patience; then raise."""
        deadline = self._clock() + self.ctx.publish_patience
        while True:
            self._flush()
            if not self._outbox:
                return
            if self._clock() > deadline:
                raise DatabaseUnavailable(f"run {self.run.run_id}: {len(self._outbox)} events could not be stored")
            time.sleep(0.5)

    def _classify(self, code: int | None, out_of_memory: bool) -> Outcome:
        if self._lease_lost:
            return Outcome(status=RunStatus.INTERRUPTED, reason=self._lease_lost)
        if self._storage_failed:
            return Outcome(status=RunStatus.FAILED, reason=self._storage_failed)
        if code == EXIT_OK and self._result is not None:
            return Outcome(status=RunStatus.COMPLETED, result=self._result)
        if self._asked is RunStatus.STOPPED:
            return Outcome(status=RunStatus.STOPPED, reason="stopped by user")
        if self._asked is RunStatus.TIMED_OUT:
            return Outcome(status=RunStatus.TIMED_OUT, reason=f"ran past max_duration={self.run.max_duration:g}s")
        if self._asked is RunStatus.INTERRUPTED:
            return Outcome(status=RunStatus.INTERRUPTED, reason="worker shut down")
        if self._error is not None:
            prefix = "out of memory: " if self._error.out_of_memory else ""
            full = any(os.strerror(code) in self._error.message for code in durable.DISK_FULL)
            where = f" (on the worker: the volume mounted at {durable.mount_point(self.run_dir)})" if full else ""
            return Outcome(status=RunStatus.FAILED,
                           reason=f"{prefix}{self._error.message}{where}\n{self._error.traceback}")  # fmt: skip
        if out_of_memory:
            limit = self.ctx.settings.child_memory
            reason = f"out of memory: the training reached its limit (YTM_CHILD_MEMORY={limit} bytes) and was killed"
            return Outcome(status=RunStatus.FAILED, reason=reason)
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (SIGKILL from outside is often the kernel's out-of-memory killer)" if code == -9 else ""
            reason = f"training process terminated unexpectedly by {name}{hint}"
            return Outcome(status=RunStatus.FAILED, reason=reason, retryable=True)
        if code == EXIT_STOPPED:
            return Outcome(status=RunStatus.STOPPED, reason="stopped by user")
        if code == EXIT_ORPHANED:
            return Outcome(status=RunStatus.INTERRUPTED, reason="the training stopped hearing from its worker")
        return Outcome(
            status=RunStatus.FAILED,
            reason=f"training process exited with code {code}; see {self.run_dir / 'train.log'}",
            retryable=True,
        )
