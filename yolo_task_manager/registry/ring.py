"""The ring of users who have waiting runs: one row per user with their waiting count and their turn.

Kept in the same transaction as every move of a run into or out of ``queued``, so that the dispatcher reads
the next users to serve with one indexed query (``turn IS NOT NULL ORDER BY turn``), whatever the backlog.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from yolo_task_manager.registry.tables import user_turns

__all__ = ["dispatched", "enter", "leave", "waiting_count"]

_T = user_turns.c


def _ensure_user(conn: Connection, user_id: str) -> None:
    """Insert the user's row unless it is there; a concurrent insert of the same row is not an error."""
    values = {"user_id": user_id, "waiting": 0, "last_turn": 0}
    if conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(user_turns).values(**values).on_conflict_do_nothing())
    elif conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(user_turns).values(**values).on_conflict_do_nothing())
    elif conn.execute(select(_T.user_id).where(_T.user_id == user_id)).first() is None:
        conn.execute(insert(user_turns).values(**values))


def enter(conn: Connection, user_id: str, now: datetime) -> None:
    """One more of the user's runs waits; the user joins the ring at their old turn."""
    _ensure_user(conn, user_id)
    conn.execute(
        update(user_turns)
        .where(_T.user_id == user_id)
        .values(waiting=_T.waiting + 1, turn=_T.last_turn, waiting_since=func.coalesce(_T.waiting_since, now))
    )


def leave(conn: Connection, user_id: str) -> None:
    """One of the user's runs stopped waiting; the user leaves the ring with their last one."""
    more = _T.waiting > 1  # SET expressions read the row as it was
    conn.execute(
        update(user_turns)
        .where(_T.user_id == user_id)
        .values(
            waiting=case((_T.waiting > 0, _T.waiting - 1), else_=0),
            turn=case((more, _T.turn), else_=None),
            waiting_since=case((more, _T.waiting_since), else_=None),
        )
    )


def dispatched(conn: Connection, user_id: str) -> None:
    """One of the user's runs was just served: ``leave``, and the user takes the next turn, so that they go to
    the back of the ring. One statement: the turn is read from the index on ``last_turn`` as it was."""
    turn = select(func.coalesce(func.max(_T.last_turn), 0) + 1).scalar_subquery()
    more = _T.waiting > 1
    conn.execute(
        update(user_turns)
        .where(_T.user_id == user_id)
        .values(
            waiting=case((_T.waiting > 0, _T.waiting - 1), else_=0),
            last_turn=turn,
            turn=case((more, turn), else_=None),
            waiting_since=case((more, _T.waiting_since), else_=None),
        )
    )


def waiting_count(conn: Connection, user_id: str) -> int:
    return int(conn.execute(select(_T.waiting).where(_T.user_id == user_id)).scalar() or 0)
