"""SELECTs of the read hot paths, compiled once and run on the driver's cursor.

SQLAlchemy's execution path (compiled-cache lookup, parameter processing, result set-up,
events) cost several times what SQLite takes to answer a one-row read by primary key — about
25 µs against 10 for a record, 45 against 14 for a subject key. A :class:`DriverQuery` keeps
SQLAlchemy for what it is good at — writing the SQL for each dialect, the types' conversions —
and skips the rest: the statement is compiled once per dialect, parameters are bound in the
compiled order through each bind's own processor, and every column's result processor is
applied, so rows hold the same values SQLAlchemy would return (timestamps as aware datetimes).
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def bind_processor(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect
                   ) -> Callable[[Any], Any] | None:
    """``type_``'s bind processing on ``dialect``; none for bytes, which both drivers bind
    as they are (``LargeBinary``'s processor only wraps each value)."""
    if isinstance(type_, sa.LargeBinary):
        return None
    proc: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return proc


def dbapi_error(sql: str, exc: Exception, dialect: sa.Dialect) -> sa.exc.StatementError:
    """What SQLAlchemy raises for the driver's ``exc``, as callers and the API expect;
    without the parameters (digests, ids), which would ride along in its message."""
    return sa.exc.DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    #: Bind names in the order the driver takes them, or None: the driver takes a mapping.
    order: tuple[str, ...] | None
    binds: dict[str, Callable[[Any], Any]]
    #: Values SQLAlchemy fixed in the statement itself (SQLite's ``OFFSET ?`` beside a LIMIT).
    fixed: dict[str, Any]
    #: (column index, result processor) of the columns that have one.
    results: tuple[tuple[int, Callable[[Any], Any]], ...]
    error: type[Exception]


class DriverQuery:
    """One statement, run on the cursor of a connection's driver (inside the caller's
    transaction) or of a pooled driver connection: a SELECT's rows, or a DML statement for
    many parameter sets at once (:meth:`many`)."""

    def __init__(self, statement: sa.Select[Any] | sa.Insert | sa.Update) -> None:
        self.statement = statement
        self._columns = list(statement.selected_columns) if isinstance(statement, sa.Select) \
            else []
        row: Any = namedtuple("Row", [c.key for c in self._columns] or ["_"],  # type: ignore[misc]
                              rename=True)
        self._make: Callable[[Any], Any] = row._make
        self._by_dialect: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _compiled(self, dialect: sa.Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is not None:
            return found
        with self._lock:
            compiled = self.statement.compile(dialect=dialect)
            sql = str(compiled)
            order = tuple(compiled.positiontup or ()) if dialect.positional else None
            binds: dict[str, Callable[[Any], Any]] = {}
            fixed: dict[str, Any] = {}
            for name, bind in compiled.binds.items():
                proc = bind_processor(bind.type, dialect)
                if proc is not None:
                    binds[name] = proc
                if not bind.required and bind.callable is None and (
                        name in order if order is not None else f"%({name})s" in sql):
                    fixed[name] = bind.value
            results = []
            for i, column in enumerate(self._columns):
                proc = column.type.dialect_impl(dialect).result_processor(dialect, None)
                if proc is not None:
                    results.append((i, proc))
            found = self._by_dialect[dialect.name] = _Compiled(
                sql, order, binds, fixed, tuple(results), dialect.loaded_dbapi.Error)
        return found

    @staticmethod
    def _args(c: _Compiled, params: Mapping[str, Any]) -> Any:
        bound = {k: (c.binds[k](v) if k in c.binds else v)
                 for k, v in ({**c.fixed, **params} if c.fixed else params).items()}
        return bound if c.order is None else tuple(bound[k] for k in c.order)

    def _run(self, cursor: Any, c: _Compiled, params: Mapping[str, Any], dialect: sa.Dialect,
             one: bool) -> list[Any]:
        args = self._args(c, params)
        try:
            cursor.execute(c.sql, args)
            raw = cursor.fetchmany(1) if one else cursor.fetchall()
        except c.error as exc:
            raise dbapi_error(c.sql, exc, dialect) from exc
        finally:
            cursor.close()
        if not c.results:
            return [self._make(r) for r in raw]
        out = []
        for r in raw:
            values = list(r)
            for i, proc in c.results:
                values[i] = proc(values[i])
            out.append(self._make(values))
        return out

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row, inside ``conn``'s transaction."""
        c = self._compiled(conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        return self._run(cursor, c, params, conn.dialect, one=False)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        """The first row or None, inside ``conn``'s transaction."""
        c = self._compiled(conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        rows = self._run(cursor, c, params, conn.dialect, one=True)
        return rows[0] if rows else None

    def first_pooled(self, engine: Engine, params: Mapping[str, Any]) -> Any | None:
        """The first row or None, on a driver connection of ``engine``'s pool (given back
        rolled back, as the pool does for every connection)."""
        c = self._compiled(engine.dialect)
        raw = engine.raw_connection()
        try:
            rows = self._run(raw.cursor(), c, params, engine.dialect, one=True)
        finally:
            raw.close()
        return rows[0] if rows else None

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """The statement once per parameter set, by the driver's ``executemany``, inside
        ``conn``'s transaction."""
        if not rows:
            return
        c = self._compiled(conn.dialect)
        args = [self._args(c, r) for r in rows]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(c.sql, args)
        except c.error as exc:
            raise dbapi_error(c.sql, exc, conn.dialect) from exc
        finally:
            cursor.close()
