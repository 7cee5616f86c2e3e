"""A worker frozen with SIGSTOP past its lease while a worker on another node takes its run over."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults._fence_support import ChildSampler, loads, predicts, worker_log
from tests.integration import conftest as integration
from tests.integration.conftest import Stack, train_followed, wait_for
from yolo_task_manager import RunStatus

pytestmark = pytest.mark.slow

# tests/integration's deployment fixtures, for this module (pytest finds fixtures among a module's names).
redis_server, base_checkpoint, datasets_dir = (
    integration.redis_server,
    integration.base_checkpoint,
    integration.datasets_dir,
)
stack, shapes = integration.stack, integration.shapes


def test_a_frozen_worker_s_training_quits_before_another_takes_over_and_the_thawed_worker_discards_its_attempt(
    stack: Stack, shapes: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    # Given: a worker training a 4-epoch run, past its first epoch, and a sampler of the process table
    frozen = stack.start_worker()
    mgr = stack.manager()
    training = train_followed(mgr, "fay", shapes, 4, "thaw")
    run_id = training.run_id
    training.wait_for_epoch(1)
    run_dir = stack.settings.storage_root / "fay" / "runs" / run_id
    with ChildSampler(run_id) as sampler:
        wait_for(lambda: sampler.samples > 0 and sampler.seen, 30, "the sampler to see the training")
        (first_child,) = sampler.children()

        # When: that worker freezes (a VM pause, a stuck NFS call) and a worker on another node takes over
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            stack.start_worker(node=f"{stack.settings.node}b")
            wait_for(lambda: first_child not in sampler.children(), 60, "the frozen worker's training to quit")
            wait_for(lambda: mgr.get_run("fay", run_id).attempt >= 2, 60, "another attempt to take the run")
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        # ... and thaws while the other worker trains
        wait_for(lambda: "fenced off" in worker_log(stack.settings.state_dir), 120,
                 "the thawed worker to find its attempt fenced off")  # fmt: skip
        run = mgr.wait("fay", run_id, timeout=300)

    # Then: never two trainings of the run at once, the thawed worker discarded its attempt, and the run
    # completed on the other worker with every epoch reported once, in order, and a model that predicts
    assert sampler.most == 1 and len(sampler.seen) >= 2
    assert run.status is RunStatus.COMPLETED, (run.reason, mgr._ctx.registry.get_transitions(run_id))
    assert run.queue == f"cpu.{stack.settings.node}b"
    assert "attempt 1 fenced off" in worker_log(stack.settings.state_dir)
    assert not (run_dir / "attempts" / "1").exists()
    assert [e for e, _ in mgr.get_metrics("fay", run_id)] == [1, 2, 3, 4]
    assert training.reported(4) == [1, 2, 3, 4]
    assert loads(run_dir / "train" / "weights" / "last.pt", run_dir / "train" / "weights" / "best.pt")
    assert predicts(mgr, "fay", "thaw", fixtures_dir, tmp_path)
