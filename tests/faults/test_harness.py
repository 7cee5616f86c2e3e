"""The harness checks itself: Redis restarts keep or lose data as asked, and the sampler counts trainings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import redis

from tests.faults.harness import TRAIN_CHILD, ProcessSampler, RedisServer, training_children, wait_for

FORKING = "import os, sys, time\nif os.fork() == 0:\n    time.sleep(30)\nelse:\n    time.sleep(30)\n"
"""A stand-in training that forks (as a subprocess call does before its exec): the fork shows the same argv."""


def test_a_restart_keeps_the_append_only_file_or_starts_empty(tmp_path: Path) -> None:
    # Given: a server holding a key
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url())
    try:
        client.set("k", "v")

        # When / Then: restarted with its data, the key is there; restarted empty, it is gone
        server.restart(keep_data=True)
        assert client.get("k") == b"v"
        server.restart(keep_data=False)
        assert client.get("k") is None
    finally:
        client.close()
        server.stop()


def test_the_sampler_counts_one_training_per_run_and_not_its_forks(tmp_path: Path) -> None:
    # Given: two stand-in trainings of two runs, the first of which forked, and a sampler
    runs = [uuid.uuid4().hex, uuid.uuid4().hex]
    jobs = [tmp_path / run_id / "spec.json" for run_id in runs]
    argvs = [[sys.executable, "-c", FORKING, TRAIN_CHILD, str(job), "3", "4"] for job in jobs]
    procs = [subprocess.Popen(argv, start_new_session=True) for argv in argvs]
    sampler = ProcessSampler().start()
    for run_id in runs:
        sampler.watch(run_id)
    try:
        # When: the sampler has seen both
        wait_for(lambda: all(sampler.pids[r] for r in runs), 30, "the sampler to see both trainings")
        wait_for(lambda: sampler.samples > 5, 30, "a few samples")

        # Then: one training each, at every sample, and by the same PIDs the process table gives
        assert training_children(runs) == {r: [p.pid] for r, p in zip(runs, procs, strict=True)}
    finally:
        sampler.stop()
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)  # the fork too
            proc.wait()
    for run_id in runs:
        sampler.check_at_most_one(run_id)
