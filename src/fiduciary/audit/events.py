"""Audit events: who did what to which records and subjects, which fields, why, with what
decision — never a field value. An event's leaf in the Merkle log covers its RFC 8785
canonical JSON, exactly the object the API returns under ``event``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.jcs import canonical as canonical  # re-exported: callers import it here
from fiduciary.clock import Clock, iso
from fiduciary.ids import ordered_id
from fiduciary.principal import ActorKind, Principal
from fiduciary.storage import Database
from fiduciary.storage.driver import dbapi_error
from fiduciary.storage.schema import audit_events, audit_subjects


@dataclass(frozen=True)
class RequestContext:
    request_id: str | None = None
    client: str | None = None
    #: The OS user running a CLI command: the actor of what the CLI does without a key.
    operator: str | None = None


#: Set by the API for each request and by the CLI for its run.
_NO_CONTEXT = RequestContext()
request_context: ContextVar[RequestContext] = ContextVar("fiduciary_request",
                                                        default=_NO_CONTEXT)


def actor_label(principal: Principal) -> str:
    """Who did it, for a ledger or ticket row: the operator behind a CLI run as SYSTEM."""
    operator = request_context.get().operator
    if principal.is_system and operator:
        return f"cli:{operator}"
    return f"{principal.kind}:{principal.username if principal.is_person else principal.id}"


def audit_actor(principal: Principal) -> Principal | None:
    """The principal an event names: None lets the audit log name the CLI operator."""
    if principal.is_system and request_context.get().operator:
        return None
    return principal


#: The columns an append writes, in the order of each row's values.
_EVENT_COLUMNS = ("event_id", "at", "action", "actor", "subject_ids", "record_ids", "event")
_SUBJECT_COLUMNS = ("subject_id", "event_id")


class _Inserts:
    """An append's two INSERTs compiled once per dialect, for the driver's executemany:
    on the path of every audited read, SQLAlchemy's per-statement machinery cost more than
    the database's own work. Values go through the columns' own bind processing (``at``)."""

    def __init__(self, dialect: sa.Dialect) -> None:
        def compiled(table: sa.Table, columns: tuple[str, ...]) -> str:
            stmt = table.insert().inline().values({c: sa.bindparam(c) for c in columns})
            done = stmt.compile(dialect=dialect)
            assert done.positiontup in (None, list(columns)), done.positiontup
            return str(done)

        self.events = compiled(audit_events, _EVENT_COLUMNS)
        self.subjects = compiled(audit_subjects, _SUBJECT_COLUMNS)
        self.named = dialect.paramstyle in ("named", "pyformat")
        # The dialect's own type: SQLite stores SQLAlchemy's fixed-width text, not the driver's.
        self.at = audit_events.c.at.type.dialect_impl(dialect).bind_processor(dialect)
        self.dbapi_error = dialect.loaded_dbapi.Error
        self.dialect = dialect

    def params(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[Any]:
        return [dict(zip(columns, r, strict=True)) for r in rows] if self.named else rows


_INSERTS: dict[str, _Inserts] = {}


class AuditActor(TypedDict):
    kind: str  # an ActorKind
    id: str | None
    name: str | None
    roles: list[str]


class AuditEvent(TypedDict):
    """One event, exactly as its Merkle leaf covers it (RFC 8785) and the API returns it.
    Never a field value: ids, names of fields, codes and digests."""

    id: str
    time: str
    actor: AuditActor
    action: str
    collection: str | None
    record_ids: list[str]
    subject_ids: list[str]
    fields: list[str]
    purpose: str | None
    decision: str
    reason: str | None
    request_id: str | None
    client: str | None
    details: dict[str, Any]


class _Waiter:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done = True


class AuditLog:
    """Appends events. ``append`` writes inside the caller's transaction (the operation and
    its event commit together or not at all); ``append_committed`` commits on its own, for
    reads and denials, before the caller answers."""

    def __init__(self, db: Database, clock: Clock, enabled: bool = True,
                 group_commit: bool = True) -> None:
        self.db = db
        self.clock = clock
        #: Only a benchmark baseline turns this off.
        self.enabled = enabled
        #: Off, each committed append has a transaction of its own (a benchmark's "before").
        self.group_commit = group_commit
        # Group commit: events waiting to be committed, and the lock of whoever commits them.
        self._pending: list[tuple[AuditEvent, _Waiter]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        #: The driver connection group commits use, kept (under ``_commit_lock``): a pool
        #: checkout, SQLAlchemy's transaction and its events cost more than the two INSERTs.
        self._appender: Any = None

    def event(self, principal: Principal | None, action: str, *,
              collection: str | None = None, record_ids: Iterable[str] = (),
              subject_ids: Iterable[str] = (), fields: Iterable[str] = (),
              purpose: str | None = None, decision: str = "allow", reason: str | None = None,
              details: dict[str, Any] | None = None) -> AuditEvent:
        ctx = request_context.get()
        if principal is not None:
            actor = AuditActor(kind=principal.kind, id=principal.id, name=principal.username,
                               roles=list(principal.roles))
        elif ctx.operator:
            actor = AuditActor(kind=ActorKind.OPERATOR, id=f"cli:{ctx.operator}",
                               name=ctx.operator, roles=[])
        else:
            actor = AuditActor(kind=ActorKind.ANONYMOUS, id=None, name=None, roles=[])
        return {
            "id": ordered_id(),
            "time": iso(self.clock.now()),
            "actor": actor,
            "action": action,
            "collection": collection,
            "record_ids": sorted(set(record_ids)),
            "subject_ids": sorted(set(subject_ids)),
            "fields": sorted(set(fields)),
            "purpose": purpose,
            "decision": decision,
            "reason": reason,
            "request_id": ctx.request_id,
            "client": ctx.client,
            "details": details or {},
        }

    @staticmethod
    def _row(event: AuditEvent, at: Callable[[Any], Any] | None) -> tuple[Any, ...]:
        actor = event["actor"]
        when = datetime.fromisoformat(event["time"])
        return (event["id"], at(when) if at else when, event["action"],
                str(actor["id"] or actor["kind"])[:128], " ".join(event["subject_ids"]),
                " ".join(event["record_ids"]), canonical(event).decode())

    def append(self, conn: Connection, event: AuditEvent) -> None:
        if not self.enabled:
            return
        self._insert(conn, [event])

    def append_many(self, conn: Connection, events: list[AuditEvent]) -> None:
        """``append`` for a batch in one statement (bulk loads, benchmarks)."""
        if self.enabled and events:
            self._insert(conn, events)

    @staticmethod
    def _inserts(dialect: sa.Dialect) -> _Inserts:
        ins = _INSERTS.get(dialect.name)
        if ins is None:
            ins = _INSERTS[dialect.name] = _Inserts(dialect)
        return ins

    def _insert(self, conn: Connection, events: list[AuditEvent]) -> None:
        """Insert events and index them by subject, for a subject's trail without a scan."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self._execute(cursor, self._inserts(conn.dialect), events)

    def _execute(self, cursor: Any, ins: _Inserts, events: list[AuditEvent]) -> None:
        rows = [self._row(e, ins.at) for e in events]
        by_subject = [(sid, e["id"]) for e in events for sid in e["subject_ids"]]
        sql = ins.events
        try:
            cursor.executemany(sql, ins.params(_EVENT_COLUMNS, rows))
            if by_subject:
                sql = ins.subjects
                cursor.executemany(sql, ins.params(_SUBJECT_COLUMNS, by_subject))
        except ins.dbapi_error as exc:
            raise dbapi_error(sql, exc, ins.dialect) from exc
        finally:
            cursor.close()

    def append_committed(self, event: AuditEvent) -> None:
        """Returns once the event is committed (or raises). Concurrent callers share one
        transaction (group commit): whoever holds the commit lock commits everything waiting
        by then, and a failure fails every caller of that transaction, none of whose events
        is stored."""
        if not self.enabled:
            return
        if not self.group_commit:
            with self.db.write() as conn:
                self._insert(conn, [event])
            return
        mine = _Waiter()
        with self._pending_lock:
            self._pending.append((event, mine))
        with self._commit_lock:
            if not mine.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    self._commit([e for e, _ in batch])
                except BaseException as exc:
                    for _, w in batch:
                        w.finish(exc)
                    raise
                for _, w in batch:
                    w.finish(None)
        if mine.error is not None:
            raise mine.error

    def _commit(self, events: list[AuditEvent]) -> None:
        """One transaction on the kept connection (``_commit_lock`` held): the events, or on
        any failure none of them and a fresh connection next time."""
        raw = self._appender
        if raw is None:
            # Through the pool, so the connection has the engine's set-up (SQLite pragmas).
            raw = self._appender = self.db.engine.raw_connection()
        ins = self._inserts(self.db.engine.dialect)
        try:
            if self.db.is_sqlite:  # autocommit mode (set on connect): take the write lock now
                raw.driver_connection.execute("BEGIN IMMEDIATE")
            self._execute(raw.cursor(), ins, events)
            raw.commit()
        except BaseException:
            self._appender = None
            try:
                raw.rollback()
            finally:
                raw.invalidate()  # whatever state it is in, never reused
            raise

    def close(self) -> None:
        """Give the kept connection back (the runtime closes the log before the engine)."""
        with self._commit_lock:
            if self._appender is not None:
                self._appender.close()
                self._appender = None

    def reserve(self, event: AuditEvent, limits: Iterable[tuple[int, datetime, str | None]]
                ) -> tuple[int, datetime] | None:
        """Append ``event`` (an attempt) unless its actor already has ``limit`` events of its
        action since a window's start (on one record, where given): the count and the append
        are one serialised transaction, so parallel attempts cannot all slip under a limit.
        Returns the exceeded (limit, window start) instead of appending."""
        actor = str(event["actor"]["id"] or event["actor"]["kind"])[:128]
        with self.db.write() as conn:
            if not self.db.is_sqlite:  # SQLite's write transactions are serial already
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                             {"k": f"reserve:{actor}:{event['action']}"})
            for limit, since, record_id in limits:
                q = sa.select(sa.func.count()).select_from(audit_events).where(
                    audit_events.c.actor == actor, audit_events.c.action == event["action"],
                    audit_events.c.at > since)
                if record_id is not None:
                    q = q.where(audit_events.c.record_ids == record_id)
                if limit and int(conn.execute(q).scalar_one()) >= limit:
                    return limit, since
            self._insert(conn, [event])
        return None

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(audit_events))
                       .scalar_one())
