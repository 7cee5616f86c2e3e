"""SIGTERM to a worker mid-run: Celery's warm shutdown asks the real training child to stop, the run is
interrupted and requeued with a resumable last.pt, and another worker finishes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import Deployment, ProcessSampler, check_exactly_once, check_model_predicts, train_followed
from tests.integration.conftest import is_resumable
from yolo_task_manager import RunStatus
from yolo_task_manager.datasets.sample import make_sample_dataset

EPOCHS = 5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def shapes(shared_dir: Path) -> Path:
    """32 generated images: real epochs long enough to stop a worker in the middle of a run."""
    return make_sample_dataset(shared_dir / "shapes32", train=32, val=8, size=64)


def test_sigterm_shuts_the_worker_down_warm_and_another_worker_resumes_the_run(
    deployment: Deployment, sampler: ProcessSampler, shapes: Path, image: Path
) -> None:
    # Given: a worker training a real 5-epoch run (ultralytics in the training child), past its first epoch
    first = deployment.start_worker(simulated=False)
    mgr = deployment.manager()
    followed = train_followed(mgr, "sam", shapes, EPOCHS, "warm")
    sampler.watch(followed.run_id)
    followed.wait_for_epoch(1)

    # When: the worker gets SIGTERM
    first.terminate()
    code = first.process.wait(60)

    # Then: it shut down by itself once its child had stopped at a batch boundary: the run is queued again,
    # interrupted with the reason, and its last.pt resumes
    assert code == 0, first.tail()
    assert "ignored the stop request" not in first.tail()
    run = mgr.get_run("sam", followed.run_id)
    assert run.status is RunStatus.QUEUED and run.last_epoch is not None and run.last_epoch < EPOCHS, run
    last = deployment.settings.storage_root / "sam" / "runs" / run.run_id / "train" / "weights" / "last.pt"
    assert is_resumable(last)
    steps = [(to, reason) for _, to, reason, _ in mgr._ctx.registry.get_transitions(run.run_id)]
    assert ("interrupted", "worker shut down") in steps

    # When: another worker comes
    deployment.start_worker(simulated=False)
    done = mgr.wait("sam", run.run_id, timeout=300)
    sampler.stop()

    # Then: it resumed the run and completed it; every epoch once, in order, in the callbacks, the stream
    # and the registry; never two trainings at once; the model predicts
    assert done.status is RunStatus.COMPLETED, done.reason
    # A "dispatched" step between queued and running, where the scheduler records one, is left out.
    shown = [to for _, to, _, _ in mgr._ctx.registry.get_transitions(run.run_id) if to != "dispatched"]
    assert shown == ["queued", "running", "interrupted", "queued", "running", "completed"]
    sampler.check_at_most_one(run.run_id, trainings=2)
    check_exactly_once(mgr, "sam", followed, EPOCHS)
    check_model_predicts(mgr, "sam", "warm", image)
