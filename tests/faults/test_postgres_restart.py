"""The registry's PostgreSQL server restarted in the middle of a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PostgresServer
from tests.faults.harness import (
    Deployment,
    ProcessSampler,
    RedisServer,
    check_exactly_once,
    check_model_predicts,
    train_followed,
)
from yolo_task_manager import RunStatus

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EPOCHS = 6


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own: the session's one must not be restarted under other tests."""
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def pg_deployment(redis_server: RedisServer, postgres: PostgresServer, template_checkpoint: Path, shared_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:  # fmt: skip
    deploy = Deployment(tmp_path_factory.mktemp("root"), redis_server.url(), template_checkpoint, (shared_dir,),
                        database_url=f"{postgres.url}/postgres")  # fmt: skip
    yield deploy
    deploy.close()


def test_a_postgres_restart_mid_run_loses_no_epoch_and_trains_once(
    pg_deployment: Deployment, postgres: PostgresServer, sampler: ProcessSampler, dataset: Path, image: Path
) -> None:
    # Given: a worker training a 6-epoch run whose registry is on PostgreSQL, past its second epoch
    pg_deployment.start_worker()
    mgr = pg_deployment.manager()
    followed = train_followed(mgr, "pat", dataset, EPOCHS, "durable")
    sampler.watch(followed.run_id)
    followed.wait_for_epoch(2)

    # When: the server is restarted (a fast shutdown cuts every session), down for longer than an epoch,
    # so that an epoch ends while it is away
    postgres.restart(down_for=2.5)
    run = mgr.wait("pat", followed.run_id, timeout=180)
    sampler.stop()

    # Then: the run completed; every epoch once, in order, in the callbacks, the stream and the registry;
    # one training at a time; the model predicts
    assert run.status is RunStatus.COMPLETED, run.reason
    sampler.check_at_most_one(run.run_id)
    check_exactly_once(mgr, "pat", followed, EPOCHS)
    check_model_predicts(mgr, "pat", "durable", image)
