"""The registry's schema migrations (Alembic), on SQLite and PostgreSQL: a new database, one made before
migrations existed, one made at an older revision, and several processes opening a new one at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from yolo_task_manager.registry import Registry
from yolo_task_manager.registry.schema import BASELINE, _config, head
from yolo_task_manager.registry.tables import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _differences(engine: Engine) -> list[object]:
    """What Alembic's autogenerate would still change: the migrations must build exactly ``tables.py``."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _at_baseline_without_alembic(url: str) -> Engine:
    """A database as release 0.1 left it: the baseline's tables, no ``alembic_version``; and one run in it."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        # Plain SQL: the columns of the baseline, not those of today's ``tables.py``.
        conn.execute(
            text(
                "INSERT INTO ytm_runs (run_id, user_id, run_name, status, base_model, dataset_dir, task, epochs, "
                "device, hyp, attempt, created_at) VALUES ('r0', 'alice', 'old', 'completed', 'yolov8n.yaml', '/d', "
                "'detect', 1, 'cpu', '{}', 1, CURRENT_TIMESTAMP)"
            )
        )
    return engine


def test_a_new_database_is_created_at_the_newest_revision_exactly_as_the_tables_say(database_url: str):
    registry = Registry(database_url)
    try:
        assert _revision(registry.engine) == head()
        assert _differences(registry.engine) == []
    finally:
        registry.close()


def test_a_database_made_before_migrations_is_recognised_and_upgraded_with_its_runs_kept(database_url: str):
    # Given: a database from release 0.1 (create_all, no version table) holding a run
    old = _at_baseline_without_alembic(database_url)
    assert "alembic_version" not in inspect(old).get_table_names()
    old.dispose()

    # When: this release opens it
    registry = Registry(database_url)
    try:
        # Then: it is at the newest revision, with the schema of this release, and the old run is still there
        assert _revision(registry.engine) == head()
        assert _differences(registry.engine) == []
        assert registry.get_run("r0").run_name == "old"
    finally:
        registry.close()


def _open(url: str) -> None:
    Registry(url).close()


def test_processes_opening_a_new_database_at_once_all_succeed_and_migrate_it_once(database_url: str):
    # When: four processes (a producer and workers starting together) open the same new database
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open, args=(database_url,)) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)

    # Then: every one succeeded, and the schema is at the newest revision, once
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]
        assert _differences(engine) == []
    finally:
        engine.dispose()
