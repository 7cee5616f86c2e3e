"""One tiny training: plain ultralytics in a fresh process vs YoloTaskManager on an already-running worker.

    .venv/bin/python benchmarks/bench_train.py [--reps 3] [--epochs 3]

plain: ``python -c "YOLO('yolov8n.yaml').train(...)"`` in a fresh offline subprocess; wall time of that
process, interpreter start and ``import ultralytics`` included.
ours:  ``mgr.train(...)`` in redis_url mode against a ``ytm worker --device cpu`` started (and timed)
beforehand, until ``mgr.wait(poll=0.05)`` returns the completed run. The worker's start-up is excluded
from the per-run figure and printed on its own.

The two arms alternate (plain, ours / ours, plain, ...) in the same run on fresh copies of the same
generated dataset, so background load hits both alike. Medians are reported; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import BASE_MODEL, TINY, USER, Bench, fmt_table, median, plain_train_code, print_header, run_python

from yolo_task_manager import RunStatus
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.workers.protocol import SPEC_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reps_pos", nargs="?", type=int, help="repetitions (same as --reps)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each arm (default 3)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    reps = args.reps_pos or args.reps

    print_header(
        "bench_train: tiny training, plain ultralytics vs YoloTaskManager",
        {
            "repetitions": reps,
            "epochs": args.epochs,
            "train args": TINY,
            "base model": BASE_MODEL,
            "dataset": "make_sample_dataset(train=16, val=8, size=64), a fresh copy per training",
        },
    )
    rows, plain, ours, breakdown = [], [], [], []
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
                    times[arm], _ = run_python(code, bench.offline_env("plain-scratch"), work)
                else:
                    dataset = bench.dataset(f"ours-{rep}")
                    started, wall0 = time.perf_counter(), time.time()
                    run_id = mgr.train(
                        USER, BASE_MODEL, str(dataset), epochs=args.epochs, run_name=f"train-{rep}", **TINY
                    )
                    submitted = time.time()
                    run = mgr.wait(USER, run_id, timeout=600, poll=0.05)
                    times[arm] = time.perf_counter() - started
                    returned = time.time()
                    if run.status is not RunStatus.COMPLETED:
                        raise RuntimeError(f"run {run_id} ended {run.status.value}: {run.reason}")
                    assert run.started_at and run.finished_at
                    run_dir = storage.run_dir(USER, run_id)
                    spawned = (run_dir / SPEC_FILE).stat().st_mtime  # written just before the child is spawned
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
            plain.append(times["plain"])
            ours.append(times["ours"])
            rows.append(
                [
                    rep + 1,
                    " then ".join(order),
                    f"{times['plain']:.2f}",
                    f"{times['ours']:.2f}",
                    f"{times['ours'] / times['plain']:.3f}",
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
        ]
    )
    print()
    print(fmt_table(["rep", "order", "plain s", "ours s", "ours/plain"], rows))
    med = {k: median(b[k] for b in breakdown) for k in breakdown[0]}
    print("\nwhere the time of `ours` goes (medians; registry timestamps, same machine clock):")
    print(
        fmt_table(
            ["phase", "seconds", "what it is"],
            [
                [
                    "train() call",
                    f"{med['submit']:.3f}",
                    "validate, record, publish QUEUED, dispatch tick (send to queue)",
                ],
                [
                    "train() returned -> started",
                    f"{med['queued']:.3f}",
                    "Celery delivery to the idle worker, lease, RUNNING transition",
                ],
                ["started -> child spawned", f"{med['prepare']:.3f}", "dataset check, data.yaml, spec.json"],
                [
                    "child spawned -> its last log line",
                    f"{med['child']:.3f}",
                    "training child: interpreter, imports (yolo_task_manager + ultralytics), training, final val",
                ],
                [
                    "child's last line -> finished",
                    f"{med['publish']:.3f}",
                    "child exit, copy best.pt into the model store, COMPLETED transition",
                ],
                [
                    "finished -> wait() returned",
                    f"{med['finish']:.3f}",
                    "wait() polling the registry every 0.05 s (its default poll is 0.5 s)",
                ],
            ],
        )
    )
    ratio = median(ours) / median(plain)
    print(
        f"\nratio of medians ours/plain = {ratio:.3f} (goal <= 1.05: {'met' if ratio <= 1.05 else 'not met'}); "
        f"worker start-up {worker_startup:.2f} s excluded"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
