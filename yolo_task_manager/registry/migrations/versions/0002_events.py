"""The durable event log: each run's events, numbered per run (``registry.event_log``).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ytm_events",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ytm_events_run_type_epoch", "ytm_events", ["run_id", "type", "epoch"])


def downgrade() -> None:
    op.drop_index("ix_ytm_events_run_type_epoch", table_name="ytm_events")
    op.drop_table("ytm_events")
