"""Twenty kill -9s of the training worker's whole process group across one run, with the default retry limits."""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.harness import (
    Deployment,
    ProcessSampler,
    check_exactly_once,
    check_model_predicts,
    train_followed,
    training_children,
    wait_for,
)
from yolo_task_manager import Run, RunStatus, Settings, YoloTaskManager

KILLS = 20
EPOCHS = 12
"""More than the twenty kills below advance the run by (well under one epoch each): all of them land mid-run."""

pytestmark = pytest.mark.slow


def test_twenty_kills_of_the_worker_never_fail_the_run_nor_train_it_twice(
    deployment: Deployment, sampler: ProcessSampler, dataset, image
) -> None:
    # Given: a run of the simulated trainer on one worker, a spare worker waiting, the default retry limits
    assert deployment.settings.max_attempts == Settings().max_attempts
    deployment.start_worker()
    deployment.start_worker()
    mgr = deployment.manager()
    followed = train_followed(mgr, "kim", dataset, EPOCHS, "phoenix")
    run_id = followed.run_id
    sampler.watch(run_id)
    rng = random.Random(9)
    kills: list[str] = []

    # When: twenty times, at a random moment (while its child starts, mid-epoch, around a save), the process
    # group of the worker training the run is killed, and a fresh worker is started
    last_attempt = 0
    while len(kills) < KILLS:
        attempt = lambda: _next_attempt(mgr, run_id, last_attempt, kills)  # noqa: B023, E731
        run, child = wait_for(attempt, 120, f"attempt {last_attempt + 1} to start its training")
        last_attempt, started = run.attempt, len(followed.logs)
        wait_for(lambda: set(child) <= sampler.pids[run_id], 10, "the sampler to see the new child")  # noqa: B023
        if rng.random() < 0.25:
            pause = rng.uniform(0.0, 1.0)  # the child takes seconds to import torch and load its checkpoint
            moment = f"{pause:.1f}s after its child started"
        else:
            wait_for(lambda: len(followed.logs) > started, 60, "the child to start training")  # noqa: B023
            pause = rng.uniform(0.0, 2.5)
            moment = f"{pause:.1f}s into its training"
        time.sleep(pause)
        deployment.worker_on(run.queue).kill()
        kills.append(f"attempt {run.attempt} {moment}")
        deployment.start_worker(wait=False)
    done = mgr.wait("kim", run_id, timeout=240)
    sampler.stop()

    # Then: the run completed; each epoch was reported once, in order, everywhere; no two trainings overlapped;
    # its model predicts
    assert done.status is RunStatus.COMPLETED, f"{done.status.value}: {done.reason}"
    assert done.attempt >= KILLS + 1
    sampler.check_at_most_one(run_id, trainings=KILLS + 1)
    check_exactly_once(mgr, "kim", followed, EPOCHS)
    check_model_predicts(mgr, "kim", "phoenix", image)


def _next_attempt(mgr: YoloTaskManager, run_id: str, after: int, kills: list[str]) -> tuple[Run, list[int]] | None:
    """The run and its training child's PIDs once an attempt after ``after`` runs with its child alive."""
    run = mgr.get_run("kim", run_id)
    assert run.status not in (RunStatus.FAILED, RunStatus.COMPLETED), (
        f"after {len(kills)} kills ({', '.join(kills)}) the run ended {run.status.value}: {run.reason}"
    )
    alive = training_children([run_id])[run_id]
    return (run, alive) if run.status is RunStatus.RUNNING and run.attempt > after and alive else None
