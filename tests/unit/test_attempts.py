"""How an attempt's outcome counts against the run: failures on their own against ``max_attempts``, lost or
interrupted workers against ``max_worker_losses`` (``tasks.train._counted``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from yolo_task_manager.settings import Settings
from yolo_task_manager.tasks.train import _counted
from yolo_task_manager.values import Run, RunStatus
from yolo_task_manager.workers.supervisor import Outcome

S = RunStatus


def _ctx(settings: Settings, **changes: Any) -> Any:
    return SimpleNamespace(settings=settings.replace(**changes))


def test_a_child_that_died_on_its_own_is_retried_until_max_attempts(
    settings: Settings, create_run: Callable[..., Run]
) -> None:
    # Given max_attempts=3 and a child killed by a signal, on a run with no failed attempt yet, then with two
    ctx = _ctx(settings, max_attempts=3)
    died = Outcome(status=S.FAILED, reason="training process terminated unexpectedly by SIGSEGV", retryable=True)
    run = create_run()

    # When the outcomes are counted
    first = _counted(ctx, run, died)
    last = _counted(ctx, replace(run, failed_attempts=2), died)

    # Then the first goes back to the queue with one failed attempt, the third fails saying why
    assert first[0] is S.INTERRUPTED and first[2] == {"failed_attempts": 1}
    assert "retrying (failed attempt 1 of max_attempts=3)" in (first[1] or "")
    assert last[0] is S.FAILED and last[2] == {"failed_attempts": 3}
    assert "gave up after 3 failed attempts (max_attempts=3)" in (last[1] or "")


@pytest.mark.parametrize("reason", ["ValueError: bad labels", "dataset check failed on the worker: no images"])
def test_a_reported_error_or_bad_input_fails_at_once(
    settings: Settings, create_run: Callable[..., Run], reason: str
) -> None:
    # Given a failure that the training (or the worker's checks) reported
    outcome = Outcome(status=S.FAILED, reason=reason)

    # When it is counted
    status, said, counters = _counted(_ctx(settings), create_run(), outcome)

    # Then the run fails with that reason, and no retry is counted
    assert (status, said, counters) == (S.FAILED, reason, {})


def test_an_interrupted_attempt_counts_one_worker_loss_and_no_failed_attempt(
    settings: Settings, create_run: Callable[..., Run]
) -> None:
    # Given a run that lost its worker four times, interrupted again by a warm shutdown
    run = replace(create_run(), worker_losses=4)

    # When the outcome is counted
    counted = _counted(_ctx(settings), run, Outcome(status=S.INTERRUPTED, reason="worker shut down"))

    # Then it counts a fifth worker loss
    assert counted == (S.INTERRUPTED, "worker shut down", {"worker_losses": 5})
