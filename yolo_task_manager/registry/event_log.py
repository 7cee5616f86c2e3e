"""The durable event log: each run's events in SQL, numbered where they are stored.

Redis only carries events to live readers; ``seq`` comes from here, so a Redis that restarts empty cannot make
a run's numbering start again.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String, Text, exists, func, insert, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from yolo_task_manager.errors import DatabaseUnavailable
from yolo_task_manager.registry.tables import events
from yolo_task_manager.values import Event, EventType

__all__ = ["EventLog"]

_CONFLICT_RETRIES = 20
"""Two processes that publish on one run at once may pick the same seq; the loser takes the next one."""


class EventLog:
    """Appends and reads the events of runs, on the registry's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, event: Event) -> Event | None:
        """Store ``event`` as its run's next seq and return it numbered; None for a metrics event of an epoch
        the run already reported (a resumed attempt re-sends the epochs its checkpoint holds).

        One statement, so one short transaction: the next seq, the dedupe and the insert are read and written
        together (SQLite takes its write lock before the read; PostgreSQL refuses a second insert of a seq).
        """
        run_id = event.run_id
        next_seq = select(func.coalesce(func.max(events.c.seq), 0) + 1).where(events.c.run_id == run_id)
        row = select(
            literal(run_id, String),
            next_seq.scalar_subquery(),
            literal(event.user_id, String),
            literal(event.type.value, String),
            literal(event.epoch, Integer),
            literal(event.to_json(), Text),
            literal(datetime.now(timezone.utc), DateTime(timezone=True)),
        )
        if event.type is EventType.METRICS and event.epoch is not None:
            reported = select(events.c.seq).where(
                events.c.run_id == run_id, events.c.type == EventType.METRICS.value, events.c.epoch >= event.epoch
            )
            row = row.where(~exists(reported))
        columns = ["run_id", "seq", "user_id", "type", "epoch", "body", "at"]
        statement = insert(events).from_select(columns, row).returning(events.c.seq)
        for _ in range(_CONFLICT_RETRIES):
            try:
                with self.engine.begin() as conn:
                    seq = conn.execute(statement).scalar()
            except IntegrityError:
                continue
            return None if seq is None else dataclasses.replace(event, seq=seq)
        raise DatabaseUnavailable(
            f"run {run_id}: {_CONFLICT_RETRIES} publishers took the same event number in turn; try again"
        )

    def read(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """The run's events with ``seq > after_seq``, oldest first (at most ``limit``)."""
        query = (
            select(events.c.seq, events.c.body)
            .where(events.c.run_id == run_id, events.c.seq > after_seq)
            .order_by(events.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dataclasses.replace(Event.from_json(row.body), seq=row.seq) for row in conn.execute(query)]

    def newest(self, run_id: str) -> Event | None:
        """The run's latest event: a feed whose reader has it, and sees it is an end, is done."""
        query = select(events.c.seq, events.c.body).where(events.c.run_id == run_id).order_by(events.c.seq.desc())
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return None if row is None else dataclasses.replace(Event.from_json(row.body), seq=row.seq)
