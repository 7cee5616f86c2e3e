"""The registry's database going away is ``BrokerUnavailable`` (never a SQLAlchemy error), and a PostgreSQL
server that comes back is used again without a restart of the producer."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from yolo_task_manager import BrokerUnavailable, InvalidInput
from yolo_task_manager.broker.embedded import free_port
from yolo_task_manager.registry import Registry
from yolo_task_manager.values import RunSpec

pytestmark = pytest.mark.postgres


class Postgres:
    """A PostgreSQL server of this test's own, which it may stop and start again on the same port."""

    def __init__(self) -> None:
        servers = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not servers or shutil.which("pg_ctl") is None and not (servers[-1].parent / "pg_ctl").exists():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL tests need `apt install postgresql`")
            pytest.skip("PostgreSQL tests need `apt install postgresql`")
        self.bin = servers[-1].parent
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        self.scratch = Path(tempfile.mkdtemp(prefix="ytm-pg-"))
        if self.user:
            shutil.chown(self.scratch, self.user)
        self.port = free_port()
        self.url = f"postgresql+psycopg://ytm:unused-password@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(self.scratch / "data"), "-U", "ytm", "--auth=trust")

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], user=self.user, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.scratch} -F"
        self._pg("pg_ctl", "-D", str(self.scratch / "data"), "-o", options, "-l", str(self.scratch / "log"), "-w",
                 "start")  # fmt: skip

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.scratch / "data"), "-m", "immediate", "-w", "stop")


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pytest.importorskip("psycopg")
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        subprocess.run([str(server.bin / "pg_ctl"), "-D", str(server.scratch / "data"), "-m", "immediate", "stop"],
                       user=server.user, capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(server.scratch, ignore_errors=True)


def test_a_database_that_goes_away_is_broker_unavailable_and_is_used_again_when_back(postgres: Postgres) -> None:
    # Given a registry on PostgreSQL with one run
    registry = Registry(postgres.url)
    run = registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml", dataset_dir="/d",
                              task="detect",
                              epochs=1, device="cpu", hyp={}, max_duration=None))  # fmt: skip
    try:
        # When the server restarts under the registry's pooled connection, and later stops
        postgres.stop()
        postgres.start()  # returns once the server accepts connections
        again = registry.get_run(run.run_id)
        postgres.stop()
        with pytest.raises(BrokerUnavailable) as down:
            registry.get_run(run.run_id)

        # Then the same registry object read the run at the first try after the restart (the pool's pre-ping
        # found the dead connection and opened a new one), and the outage was a package error that says what
        # to check, without the password
        assert again.run_id == run.run_id
        assert "check database_url" in str(down.value) and "unused-password" not in str(down.value)
    finally:
        registry.close()


def test_a_value_postgresql_cannot_store_is_invalid_input(postgres: Postgres) -> None:
    # Given a registry on PostgreSQL, whose integers are 32 bits
    registry = Registry(postgres.url)
    try:
        # When a run with 2**40 epochs is recorded
        # Then it is InvalidInput (not a SQLAlchemy DataError), and nothing was stored
        with pytest.raises(InvalidInput, match="cannot be stored in the registry database"):
            registry.create_run(RunSpec(user_id="a", run_name="r", base_model="yolov8n.yaml", dataset_dir="/d",
                              task="detect",
                                epochs=2**40, device="cpu", hyp={}, max_duration=None))  # fmt: skip
        assert registry.list_runs("a") == []
    finally:
        registry.close()
