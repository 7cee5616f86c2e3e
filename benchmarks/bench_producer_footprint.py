"""The producer side never imports torch or ultralytics: module check, import time and peak RSS.

    .venv/bin/python benchmarks/bench_producer_footprint.py [--reps 5]

Three kinds of fresh process, interleaved (rotating order) ``--reps`` times, all with the offline env:

- bare:        ``python -c pass`` (interpreter floor);
- producer:    import yolo_task_manager; ``YoloTaskManager(...)`` with redis_url to a running Redis (no
               worker); one ``train()``; wait until ``on_event`` delivers the QUEUED event; read
               ``mgr.events``; ``close()``;
- ultralytics: ``import ultralytics``.

Each process reports whether ``torch``/``ultralytics`` (and a few other heavy modules) ended up in
``sys.modules``, its import time (``perf_counter`` around the imports) and its peak RSS, twice:
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` and ``VmHWM`` from ``/proc/self/status``. On Linux
``ru_maxrss`` survives ``exec``: a process spawned from this one (about 55 MiB) reports at least this
one's RSS, so the ratios use ``VmHWM``, the high-water mark of the new process image alone. The parent
measures each process's wall time. Medians and ratios are printed; the module check is reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
import sys

from _common import BASE_MODEL, TINY, USER, Bench, fmt_table, median, print_header, run_python

HEAVY = ("torch", "ultralytics", "torchvision", "numpy", "cv2", "matplotlib", "celery", "sqlalchemy")

_REPORT = f"""
import json, resource, sys
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{
    "import_s": import_s, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_mib": hwm / 1024,
    "modules": {{m: m in sys.modules for m in {HEAVY!r}}}, "n_modules": len(sys.modules), **extra,
}}))
"""

BARE = "import time\nt = time.perf_counter()\nimport_s = time.perf_counter() - t\nextra = {}\n" + _REPORT

ULTRALYTICS = (
    "import time\nt = time.perf_counter()\nimport ultralytics\nimport_s = time.perf_counter() - t\n"
    "extra = {}\n" + _REPORT
)


def producer_code(redis_url: str, root: str, prefix: str, dataset: str) -> str:
    return (
        f"""
import time
t = time.perf_counter()
import threading
from yolo_task_manager import Settings, YoloTaskManager
from yolo_task_manager.storage import LocalFileSystemStorage
import_s = time.perf_counter() - t

t = time.perf_counter()
settings = Settings(storage_root={root!r}, redis_url={redis_url!r}, key_prefix={prefix!r})
mgr = YoloTaskManager(LocalFileSystemStorage({root!r}), default_device="cpu", settings=settings)
construct_s = time.perf_counter() - t
got = threading.Event()
events = []
t = time.perf_counter()
run_id = mgr.train({USER!r}, {BASE_MODEL!r}, {dataset!r}, epochs=3, run_name="footprint",
                   callbacks={{"on_event": lambda e: (events.append(e), got.set())}}, **{TINY!r})
train_s = time.perf_counter() - t
received = got.wait(10)
event_s = time.perf_counter() - t
history = mgr.events({USER!r}, run_id)
mgr.close()
extra = {{"construct_s": construct_s, "train_s": train_s, "event_s": event_s, "event_received": received,
          "first_event": events[0].status.value if events else None, "history_len": len(history)}}
"""
        + _REPORT
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    print_header(
        "bench_producer_footprint: producer process vs `import ultralytics`",
        {"repetitions": args.reps, "heavy modules checked": ", ".join(HEAVY)},
    )

    results: dict[str, list[dict]] = {"bare": [], "producer": [], "ultralytics": []}
    with Bench() as bench:
        env = bench.offline_env("probe-scratch")
        dataset = str(bench.dataset("footprint"))
        run_python("import ultralytics", env, bench.root)  # untimed warm-up of the page cache
        kinds = list(results)
        for rep in range(args.reps):
            for kind in kinds[rep % 3 :] + kinds[: rep % 3]:  # rotate the order
                if kind == "producer":
                    s = bench.settings()  # fresh storage root and key prefix: a first-time producer each time
                    code = producer_code(bench.redis_url, str(s.storage_root), s.key_prefix, dataset)
                else:
                    code = BARE if kind == "bare" else ULTRALYTICS
                wall, out = run_python(code, env, bench.root)
                report = json.loads(out.strip().splitlines()[-1])
                report["wall_s"] = wall
                results[kind].append(report)
            print(f"rep {rep + 1}/{args.reps} done", flush=True)

    print()
    prod = results["producer"]
    print("modules present in the producer process (every repetition):")
    print(
        fmt_table(
            ["module", "producer", "import ultralytics"],
            [[m, _all(prod, m), _all(results["ultralytics"], m)] for m in HEAVY],
        )
    )
    print(
        f"\nproducer: QUEUED event received by callback in {sum(r['event_received'] for r in prod)}/{len(prod)} "
        f"processes; first event {prod[0]['first_event']!r}; events length {prod[0]['history_len']}"
    )

    def med(kind: str, key: str) -> float:
        return median(r[key] for r in results[kind])

    rows = []
    for kind, label in [
        ("bare", "python -c pass"),
        ("producer", "producer (import + construct + train + 1 event)"),
        ("ultralytics", "import ultralytics"),
    ]:
        rows.append(
            [
                label,
                f"{med(kind, 'import_s') * 1000:.0f}",
                f"{med(kind, 'rss_mib'):.0f}",
                f"{med(kind, 'maxrss_mib'):.0f}",
                f"{med(kind, 'wall_s'):.2f}",
                f"{med(kind, 'n_modules'):.0f}",
            ]
        )
    print()
    print(
        fmt_table(
            ["process", "import ms", "peak RSS MiB (VmHWM)", "ru_maxrss MiB", "process wall s", "sys.modules"], rows
        )
    )
    print(
        "(ru_maxrss keeps the high-water mark of the memory the process had before exec, i.e. of this benchmark\n"
        " process that spawned it; VmHWM belongs to the new image alone, so the ratios use VmHWM.)"
    )
    print(
        "\nproducer phases (medians): "
        f"construct {med('producer', 'construct_s') * 1000:.0f} ms, "
        f"train() {med('producer', 'train_s') * 1000:.0f} ms, "
        f"train() start -> QUEUED event in the callback {med('producer', 'event_s') * 1000:.0f} ms"
    )
    above_bare = (med("producer", "rss_mib") - med("bare", "rss_mib")) / (
        med("ultralytics", "rss_mib") - med("bare", "rss_mib")
    )
    print(
        fmt_table(
            ["ratio producer / import ultralytics", "value"],
            [
                ["import time", f"{med('producer', 'import_s') / med('ultralytics', 'import_s'):.3f}"],
                ["peak RSS (VmHWM)", f"{med('producer', 'rss_mib') / med('ultralytics', 'rss_mib'):.3f}"],
                [
                    "peak RSS (VmHWM) above the bare interpreter",
                    f"{above_bare:.3f}",
                ],
                [
                    "process wall time (producer does more: construct, train, event)",
                    f"{med('producer', 'wall_s') / med('ultralytics', 'wall_s'):.3f}",
                ],
            ],
        )
    )
    return 0


def _all(reports: list[dict], module: str) -> str:
    flags = [r["modules"][module] for r in reports]
    return "yes" if all(flags) else "no" if not any(flags) else f"{sum(flags)}/{len(flags)}"


if __name__ == "__main__":
    sys.exit(main())
