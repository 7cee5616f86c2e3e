"""The SQL schema: runs, their transitions, their per-epoch metrics, their events."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

__all__ = ["events", "metadata", "metrics", "run_events", "runs"]

metadata = MetaData()

runs = Table(
    "ytm_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("run_name", String(64), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("base_model", Text, nullable=False),
    Column("dataset_dir", Text, nullable=False),
    Column("task", String(16), nullable=False),
    Column("epochs", Integer, nullable=False),
    Column("device", String(64), nullable=False),
    Column("hyp", JSON, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("queue", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("dispatched_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("reason", Text),
    Column("last_epoch", Integer),
    Column("model_name", String(64)),
    Column("max_duration", Float),
    UniqueConstraint("user_id", "run_name", name="uq_ytm_runs_user_run_name"),
)

run_events = Table(
    "ytm_run_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("reason", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)

metrics = Table(
    "ytm_metrics",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("values", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "ytm_events",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("user_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("epoch", Integer),
    Column("body", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    # The metrics-epoch dedupe reads the run's highest reported epoch from this index.
    Index("ix_ytm_events_run_type_epoch", "run_id", "type", "epoch"),
)
"""The durable event log: each run's events, numbered 1, 2, ... by the one insert that stores them."""
