"""The one writer of run state: guarded SQL transitions, each with an event row."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, overload

from sqlalchemy import Connection, create_engine, event, func, insert, or_, select, text, update
from sqlalchemy.engine import Engine, ExceptionContext, Row, make_url
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from yolo_task_manager.errors import (
    AlreadyExists,
    DatabaseUnavailable,
    InvalidInput,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    YoloTaskManagerError,
)
from yolo_task_manager.redact import mask_url, redact
from yolo_task_manager.registry import ring
from yolo_task_manager.registry.event_log import EventLog
from yolo_task_manager.registry.schema import upgrade
from yolo_task_manager.registry.tables import metrics, run_events, runs, user_turns
from yolo_task_manager.values import Run, RunSpec, RunStatus

__all__ = ["ALLOWED", "Registry"]

S = RunStatus
ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    S.DISPATCHED: frozenset({S.QUEUED}),
    S.RUNNING: frozenset({S.DISPATCHED}),
    S.COMPLETED: frozenset({S.RUNNING}),
    S.FAILED: frozenset({S.QUEUED, S.DISPATCHED, S.RUNNING, S.INTERRUPTED}),
    S.STOPPED: frozenset({S.QUEUED, S.DISPATCHED, S.RUNNING, S.INTERRUPTED}),
    S.TIMED_OUT: frozenset({S.RUNNING}),
    S.INTERRUPTED: frozenset({S.RUNNING}),
    S.QUEUED: frozenset({S.DISPATCHED, S.INTERRUPTED, S.STOPPED, S.FAILED, S.TIMED_OUT}),
}
"""For each target state, the states a run may reach it from."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Registry:
    """Runs, transitions, metrics and events in SQLite (default) or PostgreSQL."""

    def __init__(self, url: str, *, file_mode: int = 0o600) -> None:
        """Open (and create) the registry at SQLAlchemy ``url``; a new SQLite file gets ``file_mode``.

        Raises:
            InvalidInput: the URL is malformed or its driver is not installed. DatabaseUnavailable: the
                database cannot be reached. Neither message shows the URL's password.
        """
        self.url = url
        try:
            if url.startswith("sqlite"):
                _create_sqlite_file(url, file_mode)
                # Pooled: closing SQLite's last connection checkpoints the WAL and fsyncs, on every write.
                self.engine: Engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError, TypeError) as exc:
            raise InvalidInput(
                f"database_url {mask_url(url)} is not usable ({redact(str(exc))}): use a SQLAlchemy URL such as "
                "postgresql+psycopg://user:password@host/db (pip install 'yolo-task-manager[postgres]'), or leave "
                "it unset for SQLite"
            ) from None
        event.listen(self.engine, "handle_error", _translate_error)
        # A forked child (a pre-fork web server) must open its own connections.
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))
        try:
            upgrade(self.engine)
        except YoloTaskManagerError as exc:
            self.engine.dispose()
            raise type(exc)(f"cannot open the registry database {mask_url(url)}: {exc}") from None
        self.events = EventLog(self.engine)
        """Every run's events, numbered: the durable log behind the Redis streams."""

    def close(self) -> None:
        self.engine.dispose()

    def create_run(self, spec: RunSpec, *, max_waiting: int | None = None) -> Run:
        """Insert a new queued run; raise ``AlreadyExists`` when the user already has ``spec.run_name``.

        Raises:
            LimitExceeded: the user already has ``max_waiting`` runs queued; nothing was written.
        """
        now = _now()
        values = {**spec.to_dict(), "run_id": uuid.uuid4().hex, "status": S.QUEUED.value, "attempt": 0,
                  "created_at": now, "failed_attempts": 0, "worker_losses": 0}  # fmt: skip
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(runs).values(**values))
                conn.execute(insert(run_events).values(run_id=values["run_id"], to_status=S.QUEUED.value, at=now))
                ring.enter(conn, spec.user_id, now)  # its row lock (PostgreSQL) makes the count below exact
                waiting = ring.waiting_count(conn, spec.user_id)
                if max_waiting is not None and waiting > max_waiting:
                    raise LimitExceeded(
                        f"user {spec.user_id!r} already has {waiting - 1} runs queued (max_queued_per_user="
                        f"{max_waiting}): nothing was queued; submit again once some have started, or stop() some"
                    )
        except IntegrityError:
            raise AlreadyExists(
                f"user {spec.user_id!r} already has a run named {spec.run_name!r}: "
                "choose another run_name, or resume() the existing run"
            ) from None
        return self.get_run(values["run_id"])

    def get_run(self, run_id: str, user_id: str | None = None) -> Run:
        """The run; ``NotFound`` when it is missing or, given ``user_id``, belongs to someone else."""
        query = select(runs).where(runs.c.run_id == run_id)
        if user_id is not None:
            query = query.where(runs.c.user_id == user_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no run {run_id!r} for this user: see list_runs()")
        return _to_run(row)

    def waiting_users(self, limit: int, offset: int = 0) -> list[tuple[str, int]]:
        """(user_id, turn of their last dispatch) of users with waiting runs, the one served longest ago first."""
        query = (
            select(user_turns.c.user_id, user_turns.c.last_turn)
            .where(user_turns.c.turn.is_not(None))
            .order_by(user_turns.c.turn, user_turns.c.waiting_since, user_turns.c.user_id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [(row.user_id, row.last_turn) for row in conn.execute(query)]

    def waiting_runs(self, user_id: str, devices: Iterable[str], limit: int) -> list[Run]:
        """The user's oldest ``limit`` queued runs whose device request is one of ``devices``."""
        query = (
            select(runs)
            .where(runs.c.status == S.QUEUED.value, runs.c.user_id == user_id, runs.c.device.in_(list(devices)))
            .order_by(runs.c.created_at, runs.c.run_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_to_run(row) for row in conn.execute(query)]

    def waiting_devices(self) -> list[str]:
        """The device requests of queued runs: one index step on ``(status, device)`` per distinct request (a
        skip scan), not one per run."""
        with self.engine.connect() as conn:
            found = conn.execute(_SKIP_SCAN_DEVICES, {"status": S.QUEUED.value}).scalars()
            return sorted(d for d in found if d is not None)

    def list_runs(self, user_id: str | None = None, statuses: Iterable[RunStatus] | None = None) -> list[Run]:
        query = select(runs).order_by(runs.c.created_at, runs.c.run_id)
        if user_id is not None:
            query = query.where(runs.c.user_id == user_id)
        if statuses is not None:
            query = query.where(runs.c.status.in_([s.value for s in statuses]))
        with self.engine.connect() as conn:
            return [_to_run(row) for row in conn.execute(query)]

    def record_transition(
        self,
        run_id: str,
        to: RunStatus,
        *,
        reason: str | None = None,
        attempt: int | None = None,
        **values: Any,
    ) -> Run:
        """Move the run to ``to`` if ``ALLOWED`` says it may (and, given ``attempt``, only that attempt).

        The storage half of a transition: callers go through ``Context.transition``, which also publishes it.

        Raises:
            InvalidTransition: the run is in another state, or another attempt owns it.
        """
        allowed = ALLOWED[to]
        changes: dict[str, Any] = {"status": to.value, "reason": reason, **values}
        if to is S.DISPATCHED:  # a new attempt: its number fences off every earlier one
            if not values.get("queue"):
                raise InvalidInput("a dispatch names its queue")
            changes.update(attempt=runs.c.attempt + 1, dispatched_at=_now(), started_at=None)
        elif to is S.RUNNING:
            changes.setdefault("started_at", _now())
        elif to is S.QUEUED:
            changes.update(queue=None, dispatched_at=None, finished_at=None)
        elif to in (S.COMPLETED, S.FAILED, S.STOPPED, S.TIMED_OUT):
            changes["finished_at"] = _now()
        query = update(runs).where(runs.c.run_id == run_id, runs.c.status.in_([s.value for s in allowed]))
        if attempt is not None:
            query = query.where(runs.c.attempt == attempt)
        status_now = select(runs.c.status, runs.c.user_id).where(runs.c.run_id == run_id)
        with self.engine.begin() as conn:
            # Compare and set: the update applies only to the state just read, so the row records the state
            # the run really left even when another process moves it in between (then read it again).
            while True:
                row = conn.execute(status_now).first()
                if row is None:
                    raise NotFound(f"no run {run_id!r}")
                before, user_id = row
                if conn.execute(query.where(runs.c.status == before).values(**changes)).rowcount == 1:
                    break
                if conn.execute(status_now).scalar() == before:
                    raise InvalidTransition(
                        f"run {run_id} is {before}: it cannot become {to.value}"
                        + (f" (attempt {attempt} no longer owns it)" if attempt is not None else "")
                    )
            conn.execute(
                insert(run_events).values(
                    run_id=run_id, from_status=before, to_status=to.value, reason=reason, at=_now()
                )
            )
            _move_in_ring(conn, user_id, before, to)
        return self.get_run(run_id)

    def mark_dispatched(self, run_id: str, queue: str) -> int | None:
        """The storage half of a dispatch (``queued -> dispatched`` on ``queue``); the new attempt, or None if the
        run no longer waits. The dispatcher goes through ``Context.transition``, which also publishes it."""
        try:
            return self.record_transition(run_id, S.DISPATCHED, queue=queue).attempt
        except InvalidTransition:
            return None

    def explain_waiting(self, device: str, reason: str, limit: int | None = None) -> int:
        """Set ``reason`` on runs queued for ``device`` (at most ``limit`` of them); return how many changed."""
        stale = select(runs.c.run_id).where(
            runs.c.status == S.QUEUED.value,
            runs.c.device == device,
            or_(runs.c.reason.is_(None), runs.c.reason != reason),
        )
        if limit is not None:
            stale = stale.limit(limit)
        with self.engine.begin() as conn:
            return conn.execute(update(runs).where(runs.c.run_id.in_(stale)).values(reason=reason)).rowcount

    def record_metrics(self, run_id: str, epoch: int, values: dict[str, float]) -> bool:
        """Store one epoch's metrics; False when that epoch was already recorded."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(metrics).values(run_id=run_id, epoch=epoch, values=values, at=_now()))
                conn.execute(update(runs).where(runs.c.run_id == run_id).values(last_epoch=epoch))
        except IntegrityError:
            return False
        return True

    def get_metrics(self, run_id: str) -> list[tuple[int, dict[str, float]]]:
        query = select(metrics.c.epoch, metrics.c["values"]).where(metrics.c.run_id == run_id).order_by(metrics.c.epoch)
        with self.engine.connect() as conn:
            return [(row.epoch, row.values) for row in conn.execute(query)]

    def get_transitions(self, run_id: str) -> list[tuple[str | None, str, str | None, datetime]]:
        """(from, to, reason, at) for each transition of the run, oldest first."""
        query = select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.id)
        with self.engine.connect() as conn:
            return [(r.from_status, r.to_status, r.reason, _utc(r.at)) for r in conn.execute(query)]

    def count_runs(self) -> list[tuple[str, str, int]]:
        """(status, user_id, how many runs) for every pair that has runs: one grouped query, for monitoring."""
        query = select(runs.c.status, runs.c.user_id, func.count()).group_by(runs.c.status, runs.c.user_id)
        with self.engine.connect() as conn:
            return [(status, user, int(n)) for status, user, n in conn.execute(query)]

    def count_waiting(self) -> dict[str, int]:
        """Device -> how many runs wait to be dispatched to it."""
        query = select(runs.c.device, func.count()).where(runs.c.status == S.QUEUED.value).group_by(runs.c.device)
        with self.engine.connect() as conn:
            return {device: int(n) for device, n in conn.execute(query)}


_SKIP_SCAN_DEVICES = text(
    f"""
    WITH RECURSIVE d(device) AS (
        SELECT min(device) FROM {runs.name} WHERE status = :status
        UNION ALL
        SELECT (SELECT min(device) FROM {runs.name} WHERE status = :status AND device > d.device)
        FROM d WHERE d.device IS NOT NULL
    )
    SELECT device FROM d
    """
)


def _move_in_ring(conn: Connection, user_id: str, before: str, to: RunStatus) -> None:
    """Keep the user's waiting count and turn in step with the run's move, in the same transaction."""
    if to is S.DISPATCHED:  # from queued, the one way
        ring.dispatched(conn, user_id)
    elif before == S.QUEUED.value:
        ring.leave(conn, user_id)
    elif to is S.QUEUED:
        ring.enter(conn, user_id, _now())


def _translate_error(context: ExceptionContext) -> Exception | None:
    """Every failure of the database reaches the caller as one of the package's errors, without credentials.

    Integrity errors stay as they are: the methods turn them into their own messages. So do pre-ping failures:
    the pool must see SQLAlchemy's own error to reconnect to a restarted server.
    """
    error, original = context.sqlalchemy_exception, context.original_exception
    if isinstance(error, IntegrityError) or context.is_pre_ping:
        return None
    detail = " ".join(redact(str(original)).split())  # one line: a log tail shows the last one
    if isinstance(error, DataError) or isinstance(original, (OverflowError, TypeError, ValueError)):
        return InvalidInput(f"a value cannot be stored in the registry database: {detail}")
    if isinstance(error, (OperationalError, InterfaceError)) or context.is_disconnect:
        return DatabaseUnavailable(f"the registry database failed: {detail}: check database_url and that it is running")
    return YoloTaskManagerError(f"the registry database refused a query: {detail}")


def _create_sqlite_file(url: str, mode: int) -> None:
    """Create a SQLite database file with ``mode`` (its -wal and -shm files copy it); leave one that exists."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        os.chmod(path, mode)
    except OSError:
        return  # there already, or its folder is missing: SQLite says so in its own words


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC: SQLite hands back naive datetimes (every one we stored was UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _to_run(row: Row[Any]) -> Run:
    m = row._mapping
    return Run(
        run_id=m["run_id"],
        user_id=m["user_id"],
        run_name=m["run_name"],
        status=RunStatus(m["status"]),
        base_model=m["base_model"],
        dataset_dir=m["dataset_dir"],
        task=m["task"],
        epochs=m["epochs"],
        device=m["device"],
        hyp=dict(m["hyp"] or {}),
        attempt=m["attempt"],
        queue=m["queue"],
        created_at=_utc(m["created_at"]),
        dispatched_at=_utc(m["dispatched_at"]),
        started_at=_utc(m["started_at"]),
        finished_at=_utc(m["finished_at"]),
        reason=m["reason"],
        last_epoch=m["last_epoch"],
        model_name=m["model_name"],
        max_duration=m["max_duration"],
        failed_attempts=m["failed_attempts"],
        worker_losses=m["worker_losses"],
    )
