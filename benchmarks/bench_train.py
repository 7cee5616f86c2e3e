"""One tiny training: plain ultralytics in a fresh process vs YoloTaskManager on an already-running worker.

    .venv/bin/python benchmarks/bench_train.py [--reps 3] [--epochs 3] [--poll 0.05]

plain: ``python -c "YOLO('yolov8n.yaml').train(...)"`` in a fresh offline subprocess; wall time of that
process, interpreter start and ``import ultralytics`` included.
ours:  ``mgr.train(...)`` in redis_url mode against a ``ytm worker --device cpu`` started (and timed)
beforehand, until ``mgr.wait(poll=0.05)`` returns the completed run (also shown: when the COMPLETED
status reached an ``on_status`` callback). The worker's start-up is excluded from the per-run figure and
printed on its own.

Also printed: a phase split of both arms (registry timestamps, and the mtime of each process's log for
"last log line"), and, once per repetition, the import time of ``import ultralytics`` alone vs what our
training child imports, in fresh processes.

The two arms alternate (plain, ours / ours, plain, ...) in the same run on fresh copies of the same
generated dataset, so background load hits both alike. Medians are reported; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import (
    BASE_MODEL,
    TINY,
    USER,
    Bench,
    fmt_table,
    median,
    plain_train_code,
    print_header,
    run_python,
    run_python_logged,
)

from yolo_task_manager import RunStatus
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.workers.protocol import JOB_FILE

CHILD_IMPORTS = "import yolo_task_manager.workers.train_child, ultralytics"
"""What the training child imports before training (its module lives in the yolo_task_manager package)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reps_pos", nargs="?", type=int, help="repetitions (same as --reps)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each arm (default 3)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--poll", type=float, default=0.05, help="mgr.wait() poll interval in seconds (default 0.05; the API's is 0.5)"
    )
    args = parser.parse_args(argv)
    reps = args.reps_pos or args.reps

    print_header(
        "bench_train: tiny training, plain ultralytics vs YoloTaskManager",
        {
            "repetitions": reps,
            "epochs": args.epochs,
            "train args": TINY,
            "mgr.wait() poll": f"{args.poll:g} s",
            "base model": BASE_MODEL,
            "dataset": "make_sample_dataset(train=16, val=8, size=64), a fresh copy per training",
        },
    )
    rows, plain, ours, breakdown = [], [], [], []
    event_times: list[float] = []
    plain_split: list[dict[str, float]] = []
    import_times: dict[str, list[float]] = {}
    with Bench() as bench:
        settings = bench.settings()
        _, worker_startup = bench.start_worker(settings)
        mgr = bench.manager(settings)
        storage = LocalFileSystemStorage(settings.storage_root)
        # Untimed: bring ultralytics and torch into the page cache so the first timed arm is not penalised.
        warm, _ = run_python("import ultralytics", bench.offline_env("plain-scratch"), bench.root)
        print(f"worker start-up (spawn -> registered in Redis, excluded below): {worker_startup:.2f} s")
        print(f"warm-up `import ultralytics` subprocess (untimed arm): {warm:.2f} s\n", flush=True)

        for rep in range(reps):
            order = ("plain", "ours") if rep % 2 == 0 else ("ours", "plain")
            times: dict[str, float] = {}
            for arm in order:
                if arm == "plain":
                    dataset = bench.dataset(f"plain-{rep}")
                    work = bench.path(f"plain-{rep}")
                    data = bench.data_yaml(dataset, work)
                    code = plain_train_code(data, args.epochs, work / "train", TINY)
                    times[arm], last_line = run_python_logged(
                        code, bench.offline_env("plain-scratch"), work, work / "train.log"
                    )
                    plain_split.append({"child": last_line, "publish": times[arm] - last_line})
                else:
                    dataset = bench.dataset(f"ours-{rep}")
                    completed_at: list[float] = []

                    def on_status(run_id: str, status: RunStatus, reason: str | None, seen: list[float] = completed_at):
                        if status is RunStatus.COMPLETED:
                            seen.append(time.perf_counter())

                    started, wall0 = time.perf_counter(), time.time()
                    run_id = mgr.train(
                        USER,
                        BASE_MODEL,
                        str(dataset),
                        epochs=args.epochs,
                        run_name=f"train-{rep}",
                        callbacks={"on_status": on_status},
                        **TINY,
                    )
                    submitted = time.time()
                    run = mgr.wait(USER, run_id, timeout=600, poll=args.poll)
                    times[arm] = time.perf_counter() - started
                    returned = time.time()
                    deadline = time.monotonic() + 10
                    while not completed_at and time.monotonic() < deadline:
                        time.sleep(0.01)
                    event_times.append(completed_at[0] - started if completed_at else float("nan"))
                    if run.status is not RunStatus.COMPLETED:
                        raise RuntimeError(f"run {run_id} ended {run.status.value}: {run.reason}")
                    assert run.started_at and run.finished_at
                    run_dir = storage.run_dir(USER, run_id)
                    spawned = (run_dir / JOB_FILE).stat().st_mtime  # written just before the child is spawned
                    child_last = (run_dir / "train.log").stat().st_mtime  # the child's last output line
                    breakdown.append(
                        {
                            "submit": submitted - wall0,
                            "queued": run.started_at.timestamp() - submitted,
                            "prepare": spawned - run.started_at.timestamp(),
                            "child": child_last - spawned,
                            "publish": run.finished_at.timestamp() - child_last,
                            "finish": returned - run.finished_at.timestamp(),
                        }
                    )
            # Where part of the gap comes from: the child imports the yolo_task_manager package as well.
            env = bench.offline_env("plain-scratch")
            for probe in ("import ultralytics", CHILD_IMPORTS)[:: 1 if rep % 2 == 0 else -1]:
                import_times.setdefault(probe, []).append(run_python(probe, env, bench.root)[0])
            plain.append(times["plain"])
            ours.append(times["ours"])
            rows.append(
                [
                    rep + 1,
                    " then ".join(order),
                    f"{times['plain']:.2f}",
                    f"{times['ours']:.2f}",
                    f"{times['ours'] / times['plain']:.3f}",
                    f"{event_times[-1]:.2f}",
                ]
            )
            print(f"rep {rep + 1}/{reps}: plain {times['plain']:.2f} s, ours {times['ours']:.2f} s", flush=True)

    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    rows.append(
        [
            "median",
            "",
            f"{median(plain):.2f}",
            f"{median(ours):.2f}",
            f"{median(ours) / median(plain):.3f} (median of ratios {median(ratios):.3f})",
            f"{median(event_times):.2f}",
        ]
    )
    print()
    print(
        fmt_table(
            ["rep", "order", "plain s", "ours s (wait returned)", "ours/plain", "ours s (COMPLETED in on_status)"],
            rows,
        )
    )
    med = {k: median(b[k] for b in breakdown) for k in breakdown[0]}
    pmed = {k: median(b[k] for b in plain_split) for k in plain_split[0]}
    print("\nwhere the time goes (medians; registry timestamps and log mtimes, all on this machine's clock):")
    phases = [
        ["train() call", med["submit"], None, "validate, record, publish QUEUED, dispatch tick (send to queue)"],
        ["train() returned -> started", med["queued"], None, "Celery delivery to the idle worker, lease, RUNNING"],
        ["started -> child spawned", med["prepare"], None, "dataset check, data.yaml, spec.json"],
        [
            "process start -> its last log line",
            med["child"],
            pmed["child"],
            "interpreter, imports (ours: yolo_task_manager too), training, final validation",
        ],
        [
            "last log line -> process exit / run finished",
            med["publish"],
            pmed["publish"],
            "interpreter shutdown; ours also: copy best.pt into the model store, COMPLETED transition",
        ],
        [
            "finished -> wait() returned",
            med["finish"],
            None,
            f"wait() polling the registry every {args.poll:g} s (its default poll is 0.5 s)",
        ],
    ]
    print(
        fmt_table(
            ["phase", "ours s", "plain s", "what it is"],
            [[name, f"{o:.3f}", "-" if p is None else f"{p:.3f}", what] for name, o, p, what in phases],
        )
    )
    base, child = median(import_times["import ultralytics"]), median(import_times[CHILD_IMPORTS])
    print(
        f"\nimports alone, fresh processes (medians of {reps}): `import ultralytics` {base:.2f} s, "
        f"`{CHILD_IMPORTS}` {child:.2f} s: the training child pays {child - base:+.2f} s for the package import"
    )
    ratio = median(ours) / median(plain)
    print(
        f"\nratio of medians ours/plain = {ratio:.3f} (goal <= 1.05: {'met' if ratio <= 1.05 else 'not met'}); "
        f"worker start-up {worker_startup:.2f} s excluded"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
