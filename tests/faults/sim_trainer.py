"""A simulated training child: the real protocol, the real pipes and sandbox, real checkpoints, fake epochs.

Real ultralytics epochs on this suite's tiny data take a fraction of a second, too short to kill a worker
in the middle of one twenty times. This child takes ``SIM_EPOCH_SECONDS`` per epoch instead, and otherwise
behaves as ``yolo_task_manager.workers.train_child`` does where the fault tests look:

- each epoch ends with a real, loadable ``last.pt`` (the session's template checkpoint, re-saved with the
  epoch counter, written to a temp file, fsync'd and renamed), then a line in ``epochs.jsonl``, then its
  ``CheckpointSaved`` and ``EpochMetrics`` messages;
- it resumes from ``last.pt``, re-sending the epochs the checkpoint holds (as the real child does);
- it stops at the next tick when asked over the control pipe (``EXIT_STOPPED``, ``last.pt`` resumable),
  and quits when its worker is gone or silent (``EXIT_ORPHANED``), never in the middle of a save;
- it ends with a stripped ``best.pt`` (as ``strip_optimizer`` leaves it) that ultralytics can predict with.

The worker runs it as ``python -c <this file's text> tests.faults.sim_trainer JOB FD CONTROL_FD``
(``command``): the sandbox shows the interpreter and the package, not the tests folder, and
the module name on the command line is what the process-table sampler looks for.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from yolo_task_manager.workers.protocol import (
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_STOPPED,
    CheckpointSaved,
    EpochMetrics,
    LogLine,
    Message,
    TrainingJob,
    TrainingResult,
    encode,
)
from yolo_task_manager.workers.sandbox import watch_control

MODULE = "tests.faults.sim_trainer"
"""The marker on the child's command line."""
SIM_EPOCH_SECONDS = 1.2
EPOCH_LOG = "epochs.jsonl"
_SAVING = threading.Lock()


def command(job_file: Path, fd: int, control_fd: int) -> list[str]:
    """This trainer's argv, a ``ChildCommand``: its source on ``-c``, its module name as a marker."""
    source = Path(__file__).read_text()
    return [sys.executable, "-c", source, MODULE, str(job_file), str(fd), str(control_fd)]


def _save(ckpt: dict[str, Any], path: Path) -> None:
    """Write ``ckpt`` beside ``path``, fsync it, and rename it over ``path``: a kill never leaves half a file."""
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _metrics(epoch: int, epochs: int) -> dict[str, float]:
    return {"train/box_loss": round(1.0 / epoch, 6), "metrics/mAP50(B)": round(epoch / epochs, 6),
            "fitness": round(epoch / epochs, 6)}  # fmt: skip


def train(job: TrainingJob, out: Any, stop: threading.Event) -> int:
    import torch

    def emit(message: Message) -> None:
        out.write(encode(message))
        out.flush()

    save_dir = Path(job.save_dir)
    weights = save_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    last, best = weights / "last.pt", weights / "best.pt"
    epochs = job.spec.epochs
    done = 0
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        done = int(ckpt["epoch"]) + 1
        emit(LogLine(message=f"resuming from {last} after epoch {done}"))
        for epoch in range(1, done + 1):  # the worker that died may not have published them all
            emit(EpochMetrics(epoch=epoch, epochs=epochs, metrics=_metrics(epoch, epochs)))
    else:
        ckpt = torch.load(job.model, map_location="cpu", weights_only=False)
        emit(LogLine(message=f"starting from {job.model}"))
    for epoch in range(done + 1, epochs + 1):
        deadline = time.monotonic() + SIM_EPOCH_SECONDS
        while time.monotonic() < deadline:  # "batches": a stop is honoured between two of them
            if stop.is_set():
                return EXIT_STOPPED
            time.sleep(0.05)
        ckpt = {**ckpt, "epoch": epoch - 1, "train_args": {**(ckpt.get("train_args") or {}), "epochs": epochs}}
        metrics = EpochMetrics(epoch=epoch, epochs=epochs, metrics=_metrics(epoch, epochs))
        with _SAVING:
            _save(ckpt, last)
            with open(save_dir / EPOCH_LOG, "a") as log:
                log.write(encode(metrics))
        emit(CheckpointSaved(epoch=epoch, epochs=epochs, path=str(last)))
        emit(metrics)
    final = {**ckpt, "epoch": -1, "optimizer": None, "model": ckpt.get("ema") or ckpt["model"], "ema": None,
             "updates": None}  # fmt: skip
    with _SAVING:
        _save(final, best)
    names = final["model"].names
    labels = [names[i] for i in sorted(names)]
    imgsz = int(final["train_args"].get("imgsz") or 64)
    emit(
        TrainingResult(best=str(best), task=job.spec.task, labels=labels, imgsz=imgsz, metrics=_metrics(epochs, epochs))
    )
    return EXIT_OK


def _orphaned() -> None:
    with _SAVING:
        os._exit(EXIT_ORPHANED)


def main(argv: list[str]) -> int:
    job_file, fd, control = argv[-3:]
    job = TrainingJob.from_json(Path(job_file).read_text())
    out = os.fdopen(int(fd), "w", buffering=1)
    stop = threading.Event()
    watch_control(int(control), stop.set, _orphaned, silence=job.silence_limit)
    return train(job, out, stop)


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    os._exit(code)
