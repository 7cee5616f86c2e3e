"""Epoch end in the training child -> ``on_metrics`` in the caller: where the latency goes, p50/p99.

    .venv/bin/python benchmarks/bench_metrics_latency.py [--runs 3] [--epochs 8]

An epoch's metrics travel: training child (``on_fit_epoch_end``) -> pipe -> worker (records the row in
the registry, then publishes the event with ``ts = time.time()`` through one Lua script: stream + pub/sub)
-> the caller's subscriber thread (XREAD on the run's stream) -> ``on_metrics``/``on_event``.
All processes run on this machine, so their ``time.time()`` clocks are the same clock. Measured hops:

- publish -> callback: ``time.time()`` inside ``on_event`` minus the event's ``ts`` (set by the worker just
  before it publishes);
- worker received -> published: the event's ``ts`` minus the registry row's ``at`` (``ytm_metrics.at``,
  taken by the worker just before it inserts the row: this hop is mostly the SQLite insert + commit);
- child printed validation -> worker received: the child's ``all ...`` validation summary line appears
  in ``train.log`` (polled every 5 ms from this process) before the trainer writes results.csv, saves
  ``last.pt``/``best.pt`` (the first epoch also imports polars there), emits the checkpoint line
  (``on_model_save``) and, right after, the metrics line (``on_fit_epoch_end``). The checkpoint event's
  ``ts`` splits this into "child saving" and "checkpoint -> metrics received"; the latter bounds the
  pipe hop from above. Log times carry up to 5 ms of polling delay.

The child has no absolute timestamp in its metrics (``metrics['elapsed']`` counts from its own start),
so the log line is the closest child-side clock available. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from datetime import timezone
from pathlib import Path

from _common import BASE_MODEL, TINY, USER, Bench, fmt_table, percentile, print_header
from sqlalchemy import select

from yolo_task_manager import Event, EventType, RunStatus
from yolo_task_manager.registry import Registry
from yolo_task_manager.registry.tables import metrics as metrics_table
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.values import TERMINAL

_VAL_SUMMARY = re.compile(rb"^\s+all\s+\d+\s+\d+\s")


class LogWatcher(threading.Thread):
    """Records when each validation summary line (``all  <images>  <instances> ...``) lands in a file."""

    def __init__(self, path: Path, interval: float = 0.005) -> None:
        super().__init__(name="log-watcher", daemon=True)
        self.path, self.interval = path, interval
        self.seen: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        offset, buffer = 0, b""
        while not self.stopped.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            now = time.time()
            if chunk:
                offset += len(chunk)
                buffer += chunk
                *lines, buffer = re.split(rb"[\r\n]", buffer)
                self.seen.extend(now for line in lines if _VAL_SUMMARY.match(line))
            self.stopped.wait(self.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--wait-poll",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also poll mgr.wait() at this interval while training (default: no polling; the "
        "terminal status event ends each run)",
    )
    args = parser.parse_args(argv)
    print_header(
        "bench_metrics_latency: child epoch end -> caller's on_metrics",
        {
            "runs": args.runs,
            "epochs per run": args.epochs,
            "train args": TINY,
            "base model": BASE_MODEL,
            "train.log polling interval": "5 ms",
            "registry polling by the caller": f"mgr.wait(poll={args.wait_poll})" if args.wait_poll else "none",
        },
    )

    samples: list[dict[str, float]] = []
    with Bench() as bench:
        settings = bench.settings()
        _, startup = bench.start_worker(settings)
        mgr = bench.manager(settings)
        registry = Registry(settings.sql_url)
        storage = LocalFileSystemStorage(settings.storage_root)  # where the worker writes train.log
        print(f"worker start-up: {startup:.2f} s", flush=True)
        try:
            for r in range(args.runs):
                received: dict[int, tuple[float, float]] = {}  # epoch -> (callback time, event ts)
                checkpoints: dict[int, float] = {}  # epoch -> checkpoint event ts
                on_metrics_epochs: list[int] = []
                done = threading.Event()

                def on_event(
                    event: Event,
                    received: dict[int, tuple[float, float]] = received,
                    checkpoints: dict[int, float] = checkpoints,
                    done: threading.Event = done,
                ) -> None:
                    now = time.time()
                    if event.type is EventType.METRICS and event.epoch is not None:
                        received[event.epoch] = (now, event.ts)
                    elif event.type is EventType.CHECKPOINT and event.epoch is not None:
                        checkpoints.setdefault(event.epoch, event.ts)
                    elif event.type is EventType.STATUS and event.status in TERMINAL:
                        done.set()

                callbacks = {
                    "on_event": on_event,
                    "on_metrics": lambda run_id, epoch, m, seen=on_metrics_epochs: seen.append(epoch),
                }
                dataset = bench.dataset(f"latency-{r}")
                run_id = mgr.train(
                    USER,
                    BASE_MODEL,
                    str(dataset),
                    epochs=args.epochs,
                    run_name=f"latency-{r}",
                    callbacks=callbacks,
                    **TINY,
                )
                watcher = LogWatcher(storage.run_dir(USER, run_id) / "train.log")
                watcher.start()  # the file appears when the worker starts the child, well after this
                if args.wait_poll:
                    run = mgr.wait(USER, run_id, timeout=600, poll=args.wait_poll)
                    done.wait(30)
                else:  # no registry polling from this process while we measure: the terminal event ends it
                    if not done.wait(600):
                        raise RuntimeError(f"run {run_id} did not finish in 600 s")
                    run = mgr.get_run(USER, run_id)
                watcher.stopped.set()
                watcher.join()
                if run.status is not RunStatus.COMPLETED:
                    raise RuntimeError(f"run {run_id} ended {run.status.value}: {run.reason}")
                with registry.engine.connect() as conn:
                    db_rows = conn.execute(
                        select(metrics_table.c.epoch, metrics_table.c.at).where(metrics_table.c.run_id == run_id)
                    ).all()
                recorded = {row.epoch: _ts(row.at) for row in db_rows}
                logged = watcher.seen[: args.epochs]  # the extra last line is the final validation of best.pt
                for epoch in range(1, args.epochs + 1):
                    callback, ts = received[epoch]
                    sample = {
                        "epoch": epoch,
                        "publish_to_callback": callback - ts,
                        "received_to_publish": ts - recorded[epoch],
                    }
                    if epoch in checkpoints:
                        sample["checkpoint_to_received"] = recorded[epoch] - checkpoints[epoch]
                    if len(logged) == args.epochs:
                        sample["log_to_received"] = recorded[epoch] - logged[epoch - 1]
                        sample["log_to_callback"] = callback - logged[epoch - 1]
                        if epoch in checkpoints:
                            sample["log_to_checkpoint"] = checkpoints[epoch] - logged[epoch - 1]
                    samples.append(sample)
                print(
                    f"run {r + 1}/{args.runs}: {len(received)} metrics events, on_metrics for epochs "
                    f"{on_metrics_epochs}, {len(watcher.seen)} validation lines in train.log",
                    flush=True,
                )
        finally:
            registry.close()

    print()
    rows: list[list[object]] = []
    for key, what in [
        ("publish_to_callback", "worker publish (event ts) -> on_event in the caller: Redis stream, XREAD, JSON"),
        (
            "received_to_publish",
            "worker received the line (registry row at) -> publish: registry write (SQLite insert, commit, close)",
        ),
        (
            "checkpoint_to_received",
            "checkpoint event published -> metrics line received: child's on_model_save -> "
            "on_fit_epoch_end, pipe, worker",
        ),
        (
            "log_to_checkpoint",
            "child printed val summary -> checkpoint event published: results.csv, last.pt/best.pt saves (child), pipe",
        ),
        ("log_to_received", "child printed val summary -> worker received the metrics line (sum of the two above)"),
        ("log_to_callback", "child printed val summary -> on_event in the caller (end to end)"),
    ]:
        values = [s[key] * 1000 for s in samples if key in s]
        first = [s[key] * 1000 for s in samples if key in s and s["epoch"] == 1]
        later = [s[key] * 1000 for s in samples if key in s and s["epoch"] > 1]
        if not values:
            rows.append([key, 0, "-", "-", "-", "-", "-", what])
            continue
        rows.append(
            [
                key,
                len(values),
                f"{percentile(values, 50):.1f}",
                f"{percentile(values, 99):.1f}",
                f"{max(values):.1f}",
                f"{percentile(first, 50):.1f}",
                f"{percentile(later, 50):.1f}",
                what,
            ]
        )
    print(
        fmt_table(["hop", "n", "p50 ms", "p99 ms", "max ms", "epoch 1 p50", "epochs 2+ p50", "what it includes"], rows)
    )
    print(f"\n{len(samples)} epochs in all; with so few samples p99 is close to the maximum.")
    return 0


def _ts(value) -> float:  # type: ignore[no-untyped-def]
    # SQLite hands back naive datetimes; the registry stores UTC.
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


if __name__ == "__main__":
    sys.exit(main())
