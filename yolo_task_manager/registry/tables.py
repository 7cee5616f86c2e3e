"""The SQL schema: runs, their transitions, their per-epoch metrics, their events,
and the ring of users with waiting runs."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["events", "metadata", "metrics", "run_events", "runs", "user_turns"]

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
    # Added by revision 0002, like the indexes below and ``ytm_user_turns``.
    Column("failed_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("worker_losses", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("user_id", "run_name", name="uq_ytm_runs_user_run_name"),
    # One user's waiting runs, oldest first (the dispatcher reads a few with LIMIT), and which devices wait.
    Index("ix_ytm_runs_status_user_created", "status", "user_id", "created_at"),
    Index("ix_ytm_runs_status_device", "status", "device"),
)

user_turns = Table(
    "ytm_user_turns",
    metadata,
    Column("user_id", String(64), primary_key=True),
    # How many of the user's runs are queued; kept in the transaction that moves a run in or out of queued.
    Column("waiting", Integer, nullable=False, default=0),
    # The number of the user's last dispatch (0: never); round robin serves the smallest first.
    Column("last_turn", BigInteger, nullable=False, default=0),
    # ``last_turn`` while the user has waiting runs, else NULL: the ring is the rows where it is set.
    Column("turn", BigInteger),
    # Since when the user has had waiting runs; breaks ties between users never served.
    Column("waiting_since", DateTime(timezone=True)),
    Index("ix_ytm_user_turns_ring", "turn", "waiting_since"),
    Index("ix_ytm_user_turns_last_turn", "last_turn"),
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
