"""Scheduling: the per-run attempt counters, the indexes one dispatch decision reads, and the ring of users
with waiting runs (filled from the runs already queued).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ytm_runs") as batch:
        batch.add_column(sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("worker_losses", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_ytm_runs_status_user_created", "ytm_runs", ["status", "user_id", "created_at"])
    op.create_index("ix_ytm_runs_status_device", "ytm_runs", ["status", "device"])
    user_turns = op.create_table(
        "ytm_user_turns",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("waiting", sa.Integer, nullable=False),
        sa.Column("last_turn", sa.BigInteger, nullable=False),
        sa.Column("turn", sa.BigInteger),
        sa.Column("waiting_since", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_ytm_user_turns_ring", "ytm_user_turns", ["turn", "waiting_since"])
    op.create_index("ix_ytm_user_turns_last_turn", "ytm_user_turns", ["last_turn"])
    # Before the dispatched state, a run sent to a queue but not started was queued with a queue: it is
    # dispatched now. The others queued wait, and their users join the ring in the order they came.
    op.execute("UPDATE ytm_runs SET status = 'dispatched' WHERE status = 'queued' AND queue IS NOT NULL")
    runs = sa.table(
        "ytm_runs", sa.column("user_id"), sa.column("status"), sa.column("created_at", sa.DateTime(timezone=True))
    )
    counts = (
        op.get_bind()
        .execute(
            sa.select(runs.c.user_id, sa.func.count(), sa.func.min(runs.c.created_at))
            .where(runs.c.status == "queued")
            .group_by(runs.c.user_id)
        )
        .all()
    )
    if counts:
        op.bulk_insert(
            user_turns,
            [{"user_id": u, "waiting": n, "last_turn": 0, "turn": 0, "waiting_since": since} for u, n, since in counts],
        )


def downgrade() -> None:
    op.drop_table("ytm_user_turns")
    op.execute("UPDATE ytm_runs SET status = 'queued' WHERE status = 'dispatched'")
    op.drop_index("ix_ytm_runs_status_device", "ytm_runs")
    op.drop_index("ix_ytm_runs_status_user_created", "ytm_runs")
    with op.batch_alter_table("ytm_runs") as batch:
        batch.drop_column("worker_losses")
        batch.drop_column("failed_attempts")
