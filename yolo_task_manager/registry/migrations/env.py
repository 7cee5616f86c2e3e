"""Alembic's environment: the registry hands it an open connection (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context

from yolo_task_manager.registry.tables import metadata

connection = context.config.attributes["connection"]
# Batch mode: SQLite alters a table by copying it, which plain ALTER TABLE cannot do for most changes.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
