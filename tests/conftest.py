"""Shared test helpers: where the fixtures live, and a throwaway PostgreSQL server."""

from __future__ import annotations

import importlib.util
import os
import shutil
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of its own on loopback, for the session: its URL, without a database name.

    Needs Debian's ``postgresql`` package (``.ci/run`` installs it) and psycopg (the dev extra). Without
    them the PostgreSQL tests skip, except under CI, where they fail.
    """
    servers = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not servers or importlib.util.find_spec("psycopg") is None:
        message = "PostgreSQL tests need `apt install postgresql` and psycopg (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bindir = servers[-1].parent
    # initdb refuses to run as root; a folder outside pytest's 0700 tree lets the postgres user in.
    user = "postgres" if os.geteuid() == 0 else None
    scratch = Path(tempfile.mkdtemp(prefix="ytm-pg-"))
    if user:
        shutil.chown(scratch, user)
    data, port = scratch / "data", free_port()
    subprocess.run([bindir / "initdb", "-D", data, "-U", "ytm", "--auth=trust", "-E", "UTF8"],
                   user=user, check=True, capture_output=True)  # fmt: skip
    with open(scratch / "server.log", "ab") as log:
        server = subprocess.Popen(
            [bindir / "postgres", "-D", data, "-p", str(port), "-h", "127.0.0.1", "-k", scratch, "-F"],
            user=user, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"postgresql+psycopg://ytm@127.0.0.1:{port}"
    try:
        _wait_until_accepting(port, server, scratch / "server.log")
        yield url
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


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
