"""The schema of release 0.1: runs, their transitions, their per-epoch metrics.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ytm_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False, index=True),
        sa.Column("run_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("dataset_dir", sa.Text, nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("hyp", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("queue", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("last_epoch", sa.Integer),
        sa.Column("model_name", sa.String(64)),
        sa.Column("max_duration", sa.Float),
        sa.UniqueConstraint("user_id", "run_name", name="uq_ytm_runs_user_run_name"),
    )
    op.create_table(
        "ytm_run_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False, index=True),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ytm_metrics",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("ytm_metrics", "ytm_run_events", "ytm_runs"):
        op.drop_table(table)
