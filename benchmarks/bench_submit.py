"""Latency of ``YoloTaskManager.train()`` in redis_url mode with no worker consuming: runs just queue.

    .venv/bin/python benchmarks/bench_submit.py [--n 200]

Each call validates its arguments, inspects the dataset folder, inserts the run in the registry (SQLite
under a fresh storage root), publishes the QUEUED event (Lua script on Redis) and runs one dispatch
tick (with no worker nothing is sent); ``bench_dispatch.py`` measures the same call against a backlog.
Unique run names, a fresh key_prefix and a fresh storage root. There is no plain-ultralytics equivalent
of queueing; for scale, the wall time of ``python -c "import ultralytics"`` is measured interleaved with the submissions
(before, in the middle, after). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import BASE_MODEL, TINY, USER, Bench, fmt_table, median, percentile, print_header, run_python

from yolo_task_manager import RunStatus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="submissions (default 200)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    print_header(
        "bench_submit: train() call latency, runs queue with no worker",
        {
            "submissions": args.n,
            "train args": {"epochs": args.epochs, **TINY},
            "base model": BASE_MODEL,
            "callbacks": "none",
            "poll/sleep between calls": "none (back to back)",
        },
    )

    latencies: list[float] = []
    imports: list[float] = []
    py_start: list[float] = []
    with Bench() as bench:
        env = bench.offline_env("import-scratch")
        settings = bench.settings()
        t0 = time.perf_counter()
        mgr = bench.manager(settings)
        construct = time.perf_counter() - t0
        dataset = bench.dataset("submit")
        run_python("import ultralytics", env, bench.root)  # untimed warm-up of the page cache
        checkpoints = {0, args.n // 2, args.n}
        for i in range(args.n + 1):
            if i in checkpoints:  # interleave the baseline with the submissions
                imports.append(run_python("import ultralytics", env, bench.root)[0])
                py_start.append(run_python("pass", env, bench.root)[0])
            if i == args.n:
                break
            started = time.perf_counter()
            mgr.train(USER, BASE_MODEL, str(dataset), epochs=args.epochs, run_name=f"submit-{i:04d}", **TINY)
            latencies.append(time.perf_counter() - started)
        queued = mgr.list_runs(USER, RunStatus.QUEUED)
        print(f"runs queued afterwards: {len(queued)} of {args.n} (none dispatched: no worker)\n")

    ms = [x * 1000 for x in latencies]
    head, tail = ms[:20], ms[-20:]
    print(
        fmt_table(
            ["measure", "value"],
            [
                ["YoloTaskManager(redis_url=...) construction", f"{construct * 1000:.1f} ms"],
                ["train() first call", f"{ms[0]:.1f} ms"],
                ["train() p50", f"{percentile(ms, 50):.1f} ms"],
                ["train() p90", f"{percentile(ms, 90):.1f} ms"],
                ["train() p99", f"{percentile(ms, 99):.1f} ms"],
                ["train() max", f"{max(ms):.1f} ms"],
                ["train() mean", f"{sum(ms) / len(ms):.1f} ms"],
                ["train() median of calls 1-20", f"{median(head):.1f} ms"],
                [f"train() median of calls {len(ms) - 19}-{len(ms)}", f"{median(tail):.1f} ms"],
                [
                    f"baseline: `python -c 'import ultralytics'` (median of {len(imports)})",
                    f"{median(imports) * 1000:.0f} ms  (runs: {', '.join(f'{x:.2f}' for x in imports)} s)",
                ],
                [f"baseline: `python -c pass` (median of {len(py_start)})", f"{median(py_start) * 1000:.0f} ms"],
                ["train() p50 / import ultralytics", f"{percentile(ms, 50) / (median(imports) * 1000):.3f}"],
                ["train() p99 / import ultralytics", f"{percentile(ms, 99) / (median(imports) * 1000):.3f}"],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
