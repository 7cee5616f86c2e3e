"""The registry's schema is brought to the newest Alembic revision whenever a process opens it.

Producers, workers and the CLI all open the registry, often at the same moment: the upgrade runs under a
lock (PostgreSQL: an advisory lock for its transaction; SQLite: a lock file beside the database), and the
usual case, a database already at the newest revision, costs one query.
A database made before migrations existed (by ``metadata.create_all``, release 0.1) is recognised by its
tables and stamped with the baseline revision, then upgraded like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

__all__ = ["BASELINE", "head", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
_LOCK_ID = 0x79746D  # "ytm": the PostgreSQL advisory lock of schema upgrades


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    """The newest revision this package knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None, "the package ships no migrations"
    return revision


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to ``head()``; a no-op (one query) when it is there already."""
    with engine.connect() as connection:
        if current(connection) == head():
            return
    with _locked(engine) as connection:
        if current(connection) == head():
            return  # another process upgraded it while we waited for the lock
        config = _config(connection)
        tables = set(inspect(connection).get_table_names())
        if "ytm_runs" in tables and "alembic_version" not in tables:
            command.stamp(config, BASELINE)  # made by release 0.1's create_all: it holds the baseline
        command.upgrade(config, "head")


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction on one connection, held by this process alone among those upgrading the schema."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        with open(f"{database}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with engine.begin() as connection:
                yield connection
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        yield connection
