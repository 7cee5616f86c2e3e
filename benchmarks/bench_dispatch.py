"""Scheduling at scale: ``train()`` latency and one dispatch decision against a backlog, fairness, throughput.

    .venv/bin/python benchmarks/bench_dispatch.py [--levels 0,1000,10000,100000] [--users 1000] [--calls 200]

A real redis-server (``Bench``), the SQLite registry (``--database-url`` for PostgreSQL), no worker process
and no ultralytics: nothing trains.

1. For each backlog level (queued runs from ``--users`` users, seeded in bulk straight into the registry):
   ``train()`` p50/p99 in redis_url mode with no worker (each call validates, inspects the dataset, records
   the run, publishes QUEUED and runs the inline dispatch tick); then one dispatch decision: a ``tick()``
   with one live, free queue (a heartbeat in ``ytm:workers``; ``send`` records) that recovers, walks the
   ring, plans and claims one run. The claimed run is then completed, untimed.
2. Fairness: ``--fair-runs`` submissions from ``--users`` users with Zipf-like volumes, in a shuffled order;
   Jain's index over the users' shares of the first 1,000 dispatches (4 free queues, each run completed at
   once), against the FIFO order of the same submissions (what one plain Celery queue would deliver).
3. Enqueue throughput: 4 producer processes calling ``train()`` at once on one registry and one Redis.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from _common import BASE_MODEL, Bench, fmt_table, percentile, print_header
from sqlalchemy import delete, func, insert, select

from yolo_task_manager import Settings, YoloTaskManager
from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.registry import Registry
from yolo_task_manager.registry.tables import run_events, runs, user_turns
from yolo_task_manager.scheduling import Dispatcher
from yolo_task_manager.scheduling.policy import jain_index
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.values import Run, RunStatus

S = RunStatus
QUEUE = "cpu.benchfake"


def _user(i: int) -> str:
    return f"u{i:04d}"


def seed(registry: Registry, owners: list[str], dataset: str, start: datetime) -> None:
    """Insert queued runs for ``owners`` (one per entry, in that order) in bulk, then recount the ring."""
    rows, events = [], []
    for n, user in enumerate(owners):
        run_id = uuid.uuid4().hex
        at = start + timedelta(microseconds=n)
        rows.append({
            "run_id": run_id, "user_id": user, "run_name": f"seed-{run_id[:12]}", "status": S.QUEUED.value,
            "base_model": BASE_MODEL, "dataset_dir": dataset, "task": "detect", "epochs": 1, "device": "cpu",
            "hyp": {}, "attempt": 0, "created_at": at, "failed_attempts": 0, "worker_losses": 0,
        })  # fmt: skip
        events.append({"run_id": run_id, "to_status": S.QUEUED.value, "at": at})
    with registry.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(runs), rows[i : i + 5000])
            conn.execute(insert(run_events), events[i : i + 5000])
        counts = conn.execute(
            select(runs.c.user_id, func.count(), func.min(runs.c.created_at))
            .where(runs.c.status == S.QUEUED.value)
            .group_by(runs.c.user_id)
        ).all()
        turns = dict(conn.execute(select(user_turns.c.user_id, user_turns.c.last_turn)).all())
        conn.execute(delete(user_turns))
        conn.execute(insert(user_turns), [
            {"user_id": u, "waiting": c, "last_turn": turns.get(u, 0), "turn": turns.get(u, 0), "waiting_since": since}
            for u, c, since in counts
        ])  # fmt: skip


def queued(registry: Registry) -> int:
    with registry.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(runs.c.status == S.QUEUED.value)).scalar_one())


def time_train(mgr: YoloTaskManager, dataset: str, calls: int, users: int, tag: str) -> list[float]:
    ms = []
    for i in range(calls):
        started = time.perf_counter()
        mgr.train(_user(i % users), BASE_MODEL, dataset, epochs=1, run_name=f"t{tag}-{i:05d}", device="cpu")
        ms.append((time.perf_counter() - started) * 1000)
    return ms


def one_decision(dispatcher: Dispatcher, presence: WorkerPresence, registry: Registry) -> tuple[float, Run | None]:
    """One tick with one free live queue; the claimed run is then completed (untimed)."""
    presence.beat(QUEUE)
    started = time.perf_counter()
    sent = dispatcher.tick()
    took = (time.perf_counter() - started) * 1000
    for run, _queue in sent:
        registry.record_transition(run.run_id, S.RUNNING, attempt=run.attempt)
        registry.record_transition(run.run_id, S.COMPLETED, attempt=run.attempt)
    return took, sent[0][0] if sent else None


def recording_dispatcher(settings: Settings, mgr: YoloTaskManager) -> Dispatcher:
    ctx = mgr._ctx  # noqa: SLF001 - the benchmark drives the producer's own Redis and registry
    return Dispatcher(settings, ctx.redis, ctx.registry, lambda run, queue, attempt: None, ctx.transition)


def fairness(bench: Bench, args: argparse.Namespace, dataset: str) -> list[list[Any]]:
    settings = bench.settings(storage_root=bench.root / "fair")
    mgr = bench.manager(settings)
    rng = random.Random(7)
    volumes = {_user(i): max(1, int(args.fair_runs / 7.5 / (i + 1))) for i in range(args.users)}
    owners = [u for u, n in volumes.items() for _ in range(n)]
    rng.shuffle(owners)
    seed(mgr._ctx.registry, owners, dataset, datetime.now(timezone.utc))  # noqa: SLF001
    dispatcher = recording_dispatcher(settings, mgr)
    presence = WorkerPresence(mgr._ctx.redis, Keys(settings.key_prefix))  # noqa: SLF001
    queues = [f"cpu.benchfake{i}" for i in range(4)]
    ours: list[str] = []
    started = time.perf_counter()
    while len(ours) < 1000:
        for q in queues:
            presence.beat(q)
        sent = dispatcher.tick()
        if not sent:
            break
        for run, _queue in sent:
            ours.append(run.user_id)
            mgr._ctx.registry.record_transition(run.run_id, S.RUNNING, attempt=run.attempt)  # noqa: SLF001
            mgr._ctx.registry.record_transition(run.run_id, S.COMPLETED, attempt=run.attempt)  # noqa: SLF001
    took = time.perf_counter() - started
    ours = ours[:1000]
    fifo = owners[:1000]
    everyone = list(volumes)

    def shares(order: list[str]) -> list[int]:
        counts = Counter(order)
        return [counts[u] for u in everyone]

    top = max(volumes, key=volumes.__getitem__)
    heaviest = volumes[top] / len(owners)
    return [
        ["submissions (users, heaviest user's share)", f"{len(owners)} ({args.users}, {heaviest:.1%})"],
        ["ours: Jain's index, first 1,000 dispatches", f"{jain_index(shares(ours)):.3f}"],
        ["ours: users served / heaviest user's dispatches", f"{len(set(ours))} / {Counter(ours)[top]}"],
        ["FIFO (one Celery queue): Jain's index", f"{jain_index(shares(fifo)):.3f}"],
        ["FIFO: users served / heaviest user's dispatches", f"{len(set(fifo))} / {Counter(fifo)[top]}"],
        ["ours: 1,000 dispatches (4 queues, ticks + completions)", f"{took:.1f} s"],
    ]


def _producer(settings: Settings, dataset: str, n: int, tag: str, barrier: Any, out: Any) -> None:
    mgr = YoloTaskManager(LocalFileSystemStorage(settings.storage_root), default_device="cpu", settings=settings)
    try:
        barrier.wait()
        started = time.perf_counter()
        for i in range(n):
            mgr.train(_user(i % 1000), BASE_MODEL, dataset, epochs=1, run_name=f"p{tag}-{i:05d}", device="cpu")
        out.put(time.perf_counter() - started)
    finally:
        mgr.close()


def throughput(settings: Settings, dataset: str, per_producer: int) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(5), ctx.Queue()
    tag = uuid.uuid4().hex[:6]
    procs = [
        ctx.Process(target=_producer, args=(settings, dataset, per_producer, f"{tag}{i}", barrier, out))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a producer failed: exit codes {[p.exitcode for p in procs]}")
    return 4 * per_producer / wall, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="0,1000,10000,100000", help="queued runs to measure at")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200, help="train() calls per level")
    parser.add_argument("--decisions", type=int, default=100, help="dispatch decisions per level")
    parser.add_argument("--fair-runs", type=int, default=20000, help="submissions for the fairness run")
    parser.add_argument("--per-producer", type=int, default=150, help="train() calls per producer process")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL URL instead of SQLite")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    print_header(
        "bench_dispatch: train() and one dispatch decision against a backlog; fairness; enqueue throughput",
        {"levels (queued runs)": levels, "users": args.users, "train() calls per level": args.calls,
         "decisions per level": args.decisions, "fairness submissions": args.fair_runs,
         "producers x calls": f"4 x {args.per_producer}", "registry": args.database_url or "SQLite (WAL)"},
    )  # fmt: skip
    rows: list[list[Any]] = []
    with Bench() as bench:
        dataset = str(bench.dataset("dispatch"))
        settings = bench.settings(database_url=args.database_url)
        mgr = bench.manager(settings)
        registry = mgr._ctx.registry  # noqa: SLF001
        presence = WorkerPresence(mgr._ctx.redis, Keys(settings.key_prefix))  # noqa: SLF001
        dispatcher = recording_dispatcher(settings, mgr)
        rng = random.Random(3)
        throughput_rows = []
        rate, wall = throughput(settings, dataset, args.per_producer)
        throughput_rows.append([f"{queued(registry)} queued before", f"{rate:.0f} runs/s", f"{wall:.1f} s"])
        with registry.engine.begin() as conn:  # the benchmark's own runs out of the way: start level 0 empty
            conn.execute(delete(runs))
            conn.execute(delete(user_turns))
        for level in levels:
            missing = level - queued(registry)
            if missing > 0:
                t0 = time.perf_counter()
                seed(registry, [_user(rng.randrange(args.users)) for _ in range(missing)], dataset,
                     datetime.now(timezone.utc))  # fmt: skip
                print(f"seeded {missing} runs in {time.perf_counter() - t0:.1f} s", flush=True)
            at = queued(registry)
            train_ms = time_train(mgr, dataset, args.calls, args.users, f"{level}")
            decisions = [one_decision(dispatcher, presence, registry)[0] for _ in range(args.decisions)]
            presence.leave(QUEUE)
            rows.append([
                f"{at:,}", f"{percentile(train_ms, 50):.1f}", f"{percentile(train_ms, 99):.1f}",
                f"{percentile(decisions, 50):.2f}", f"{percentile(decisions, 99):.2f}",
            ])  # fmt: skip
            print(rows[-1], flush=True)
        rate, wall = throughput(settings, dataset, args.per_producer)
        throughput_rows.append([f"{queued(registry):,} queued before", f"{rate:.0f} runs/s", f"{wall:.1f} s"])
        fair_rows = fairness(bench, args, dataset)
    print()
    print(fmt_table(["queued runs", "train() p50 ms", "train() p99 ms", "decision p50 ms", "decision p99 ms"], rows))
    print()
    print(fmt_table(["fairness", "value"], fair_rows))
    print()
    print(fmt_table(["4 producer processes", "throughput", "wall"], throughput_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
