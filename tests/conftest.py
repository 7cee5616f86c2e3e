"""Shared test helpers: where the fixtures live, and a throwaway PostgreSQL server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from yolo_task_manager.broker.embedded import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures are missing: expected {FIXTURES} beside the repository")
    return FIXTURES


class PostgresServer:
    """A PostgreSQL server of its own on loopback and a free port, in a scratch folder; ``restart()`` keeps its data.

    Needs Debian's ``postgresql`` package (``.ci/run`` installs it) and psycopg (the dev extra): ``start()``
    skips the calling test without them, except under CI, where it fails.
    """

    def __init__(self) -> None:
        servers = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not servers or importlib.util.find_spec("psycopg") is None:
            message = "PostgreSQL tests need `apt install postgresql` and psycopg (pip install -e '.[dev]')"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.bindir = servers[-1].parent
        # initdb refuses to run as root; a folder outside pytest's 0700 tree lets the postgres user in.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.scratch = Path(tempfile.mkdtemp(prefix="ytm-pg-"))
        if self.user:
            shutil.chown(self.scratch, self.user)
        self.data, self.port = self.scratch / "data", free_port()
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run([self.bindir / "initdb", "-D", self.data, "-U", "ytm", "--auth=trust", "-E", "UTF8"],
                       user=self.user, check=True, capture_output=True)  # fmt: skip

    @property
    def url(self) -> str:
        """The server's SQLAlchemy URL, without a database name."""
        return f"postgresql+psycopg://ytm@127.0.0.1:{self.port}"

    def start(self) -> PostgresServer:
        with open(self.scratch / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.bindir / "postgres", "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1", "-k",
                 self.scratch, "-F"], user=self.user, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_until_accepting(self.port, self.process, self.scratch / "server.log")
        return self

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open sessions are cut, as a restart by an operator does."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of its own on loopback, for the session: its URL, without a database name."""
    server = PostgresServer()
    try:
        yield server.start().url
    finally:
        server.remove()


def _wait_until_accepting(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(f"host=127.0.0.1 port={port} user=ytm dbname=postgres").close()
            return
        except psycopg.OperationalError:
            assert server.poll() is None, f"PostgreSQL exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "PostgreSQL did not accept connections in 60s"
            time.sleep(0.1)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of an empty database on the session's PostgreSQL server (emptied again for each test)."""
    import psycopg

    dsn = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return f"{postgres_server}/postgres"
