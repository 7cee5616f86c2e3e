"""The training child: runs one ultralytics training and reports over a pipe, one JSON object a line.

Run as ``python -m yolo_task_manager.workers.train_child JOB_JSON FD CONTROL_FD`` by the worker, in the
sandbox, offline, in its own process group. It reads a ``TrainingJob``, writes ``protocol`` messages on
``FD``, and stops at the next batch when asked on ``CONTROL_FD`` (whose closing means the worker is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from yolo_task_manager import durable
from yolo_task_manager.errors import StorageError
from yolo_task_manager.workers.guards import guard_training
from yolo_task_manager.workers.offline import configure_ultralytics
from yolo_task_manager.workers.protocol import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_STOPPED,
    CheckpointSaved,
    ChildFailed,
    EpochMetrics,
    LogLine,
    Message,
    TrainingJob,
    TrainingResult,
    encode,
)
from yolo_task_manager.workers.sandbox import SCRATCH, watch_control


class StopRequested(Exception):
    """Raised from a batch callback: unlike ``trainer.stop``, it leaves last.pt resumable."""


_SAVING = threading.Lock()
"""Held while ultralytics writes its checkpoints, so that an orphaned child lets a save finish (up to the job's
``save_wait``; its files are renamed into place, so quitting mid-save truncates nothing)."""


def _orphaned(save_wait: float | None) -> None:
    """The worker closed the control pipe, or stopped speaking: it is gone or frozen. Quit, within bounds."""
    _SAVING.acquire(timeout=-1 if save_wait is None else save_wait)
    os._exit(EXIT_ORPHANED)


class _AtomicPath(type(Path())):  # type: ignore[misc]
    """A path whose ``write_bytes`` renames a whole fsync'd file into place: ultralytics' ``save_model``
    writes last.pt and best.pt with it, and a crash or a full disk must not leave them truncated."""

    def write_bytes(self, data: Any) -> int:
        durable.write_bytes(Path(self), bytes(data))
        return len(data)


def _atomic_strip(strip: Any) -> Any:
    """ultralytics' ``strip_optimizer``, made to save beside the file and rename (it saves in place)."""

    def strip_optimizer(f: Any = "best.pt", s: str = "", updates: dict[str, Any] | None = None) -> Any:
        target = Path(s or f)
        tmp = durable.temp_beside(target)
        try:
            out = strip(f, str(tmp), updates)
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
            durable.replace(tmp, target)
        except OSError as exc:
            raise StorageError(durable.disk_full_reason(target, exc) if exc.errno in durable.DISK_FULL
                               else f"cannot write {target}: {exc.strerror or exc}") from exc  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)
        return out

    return strip_optimizer


@contextlib.contextmanager
def _writing(path: Path) -> Any:
    """Name the file when an in-place append (the epoch log, ultralytics' results.csv) fails."""
    try:
        yield
    except OSError as exc:
        if exc.errno in durable.DISK_FULL:
            raise StorageError(durable.disk_full_reason(path, exc)) from exc
        raise


def _floats(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        try:
            out[key] = round(float(value), 6)
        except (TypeError, ValueError):
            continue
    return out


def resume_checkpoint(last: Path) -> dict[str, Any] | None:
    """``last``'s contents when it holds an unfinished epoch counter and optimizer state, else None."""
    if not last.is_file():
        return None
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise RuntimeError(
            f"{last} is damaged ({type(exc).__name__}: {exc}); delete it and resume to restart the run from "
            "its base model"
        ) from exc
    resumable = int(ckpt.get("epoch", -1)) >= 0 and ckpt.get("optimizer") is not None
    return ckpt if resumable else None


EPOCH_LOG = "epochs.jsonl"
"""In the save dir: each epoch's metrics as sent, one JSON object a line, written before they are sent."""


def trained_epochs(ckpt: dict[str, Any], logged: list[dict[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """The metrics of each epoch a checkpoint holds: as logged (``EPOCH_LOG``) where they were, else
    from the results table and metrics ultralytics saved in the checkpoint.

    A resumed attempt sends them again: the worker that died may never have published the last of
    them (ultralytics saves the checkpoint before it runs the epoch-end callbacks).
    """
    saved = int(ckpt["epoch"]) + 1
    rows: dict[int, dict[str, Any]] = {}
    table: dict[str, list[Any]] = ckpt.get("train_results") or {}
    for i, epoch in enumerate(table.get("epoch", [])):
        row = {key: column[i] for key, column in table.items() if key not in ("epoch", "time")}
        rows[int(epoch)] = {**row, "elapsed": table["time"][i]} if "time" in table else row
    if saved in rows:
        rows[saved].update(ckpt.get("train_metrics") or {})  # the saved epoch's own metrics and fitness
    rows.update((int(line["epoch"]), line["metrics"]) for line in logged)
    # Later lines and rows win; a killed attempt may have written an epoch past its checkpoint.
    return [(epoch, _floats(rows[epoch])) for epoch in sorted(rows) if epoch <= saved]


def _read_epoch_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line cut short by a kill
            lines.append(json.loads(line))
    return lines


def _labels(names: dict[int, str]) -> list[str]:
    """Class names as predictions will carry them: ultralytics shows ImageNet ids (n01440764) as words."""
    from ultralytics.nn.autobackend import check_class_names

    named = check_class_names(names)
    return [named[i] for i in sorted(named)]


def _offline_check_amp(model: Any) -> bool:
    # ultralytics' check_amp downloads yolo26n.pt to compare outputs; trust AMP instead, as the
    # check does whenever it cannot download.
    return bool(next(model.parameters()).device.type == "cuda")


def train(job: TrainingJob, out: TextIO, stop: threading.Event) -> int:
    def emit(message: Message) -> None:
        out.write(encode(message))
        out.flush()

    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    configure_ultralytics()
    guard_training(Path(job.save_dir).parent / SCRATCH)
    trainer_module.check_amp = _offline_check_amp
    trainer_module.strip_optimizer = _atomic_strip(trainer_module.strip_optimizer)

    save_dir = Path(job.save_dir)
    last = save_dir / "weights" / "last.pt"
    best = save_dir / "weights" / "best.pt"
    ckpt = resume_checkpoint(last)
    if ckpt is not None and best.is_file() and int(ckpt["epoch"]) + 1 >= int(ckpt["train_args"]["epochs"]):
        # Every epoch was trained and promoted, but the attempt ended before ultralytics' final strip (its worker
        # was lost): ultralytics refuses to resume that, so finish as it would have.
        ckpt = None
        for done in (best, last):
            trainer_module.strip_optimizer(done)
    if last.is_file() and ckpt is None and best.is_file():
        # ultralytics strips last.pt only after the final validation: the training had finished.
        emit(LogLine(message=f"training had finished: publishing {best}"))
        # The attempt that finished may never have reported its last epochs (its worker froze or died).
        for line in _read_epoch_log(save_dir / EPOCH_LOG):
            emit(EpochMetrics(epoch=int(line["epoch"]), epochs=int(line["epochs"]), metrics=_floats(line["metrics"])))
        model = YOLO(str(best))
        args = model.ckpt.get("train_args", {}) if model.ckpt else {}
        metrics = _floats(model.ckpt.get("train_metrics") or {})
        emit(TrainingResult(best=str(best), task=model.task or job.spec.task, labels=_labels(model.names),
                            imgsz=args.get("imgsz"), metrics=metrics))  # fmt: skip
        return EXIT_OK
    model = YOLO(str(last) if ckpt is not None else job.model, task=job.spec.task)
    started = time.time()
    in_epoch: list[int] = []
    emitted: set[int] = set()

    def on_train_epoch_end(trainer: Any) -> None:
        in_epoch[:] = [trainer.epoch]

    def on_fit_epoch_end(trainer: Any) -> None:
        # The final validation of best.pt fires this once more after the loop: skip it.
        if not in_epoch or trainer.epoch != in_epoch[0] or trainer.epoch in emitted:
            return
        emitted.add(trainer.epoch)
        values = {
            **(trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss else {}),
            **(trainer.metrics or {}),
            **(trainer.lr or {}),
            "fitness": trainer.fitness if trainer.fitness is not None else float("nan"),
            "elapsed": time.time() - started,
        }
        metrics = EpochMetrics(epoch=trainer.epoch + 1, epochs=trainer.epochs, metrics=_floats(values))
        with _writing(save_dir / EPOCH_LOG), open(save_dir / EPOCH_LOG, "a") as log:
            log.write(encode(metrics))
        emit(metrics)

    def on_model_save(trainer: Any) -> None:
        emit(CheckpointSaved(epoch=trainer.epoch + 1, epochs=trainer.epochs, path=str(trainer.last)))

    def on_train_batch_end(trainer: Any) -> None:
        if stop.is_set():
            raise StopRequested

    def on_pretrain_routine_start(trainer: Any) -> None:
        save_model, save_metrics = trainer.save_model, trainer.save_metrics

        def save_whole() -> Any:
            with _SAVING:
                return save_model()

        def save_named(metrics: Any) -> Any:
            with _writing(trainer.csv):
                return save_metrics(metrics)

        trainer.save_model, trainer.save_metrics = save_whole, save_named
        trainer.wdir, trainer.last, trainer.best = map(_AtomicPath, (trainer.wdir, trainer.last, trainer.best))

    for name, callback in [
        ("on_train_epoch_end", on_train_epoch_end),
        ("on_fit_epoch_end", on_fit_epoch_end),
        ("on_model_save", on_model_save),
        ("on_train_batch_end", on_train_batch_end),
        ("on_pretrain_routine_start", on_pretrain_routine_start),
    ]:
        model.add_callback(name, callback)

    if ckpt is not None:
        emit(LogLine(message=f"resuming from {last}"))
        for epoch, metrics in trained_epochs(ckpt, _read_epoch_log(save_dir / EPOCH_LOG)):
            emit(EpochMetrics(epoch=epoch, epochs=ckpt["train_args"]["epochs"], metrics=metrics))
        del ckpt
        model.train(resume=str(last), data=job.data, device=job.torch_device, save_dir=str(save_dir))
    else:
        model.train(
            **job.spec.hyp, data=job.data, epochs=job.spec.epochs, device=job.torch_device,
            project=str(save_dir.parent), name=save_dir.name, exist_ok=True,
        )  # fmt: skip
    trainer: Any = model.trainer
    emit(
        TrainingResult(
            best=str(trainer.best),
            task=model.task or job.spec.task,
            labels=_labels(trainer.data["names"]),
            imgsz=trainer.args.imgsz,
            metrics=_floats(trainer.metrics or {}),
        )
    )
    return EXIT_OK


def main(argv: list[str]) -> int:
    job = TrainingJob.from_json(Path(argv[1]).read_text())
    out = os.fdopen(int(argv[2]), "w", buffering=1)
    stop = threading.Event()
    watch_control(int(argv[3]), stop.set, lambda: _orphaned(job.save_wait), silence=job.silence_limit)
    try:
        return train(job, out, stop)
    except StopRequested:
        return EXIT_STOPPED
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the worker
        lines = traceback.format_exception(exc)
        oom = "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
        out.write(encode(ChildFailed(message=f"{type(exc).__name__}: {exc}", traceback="".join(lines[-8:]),
                                     out_of_memory=oom)))  # fmt: skip
        out.flush()
        traceback.print_exception(exc)
        return EXIT_FAILED


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and reported: skip the second-long teardown of torch and its threads.
    os._exit(code)
