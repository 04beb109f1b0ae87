"""Leases: one process at a time holds a named piece of singleton work, elected through the
database (a row with holder and expiry), renewed by its holder, taken over once it expires.

``fiduciary serve --workers N`` (or several servers on one database) runs the audit sequencer
and the schedulers only in the holder of the ``background`` lease. Time is the database
server's on PostgreSQL (one clock for every node) and this machine's on SQLite (one machine).
A holder that cannot renew stops its work ``margin`` seconds before its lease can be taken.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from fiduciary.storage.database import Database
from fiduciary.storage.schema import leases


def new_holder() -> str:
    """This process's name in a lease: host, pid and a random part (a reused pid differs)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str
    acquired_at: float
    expires_at: float


class Lease:
    """A named lease for ``holder``, ``seconds`` long."""

    def __init__(self, db: Database, name: str, seconds: float,
                 holder: str | None = None) -> None:
        self.db = db
        self.name = name
        self.seconds = seconds
        self.holder = holder or new_holder()

    def _now(self, conn: Connection) -> float:
        if self.db.is_sqlite:
            return time.time()
        return float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())"))
                     .scalar_one())

    def acquire(self) -> float | None:
        """Take the lease, or renew it if ours: the expiry (seconds since the epoch, by the
        time this process keeps: ``time.time()``), or None when another holds it."""
        started = time.time()
        with self.db.write() as conn:
            now = self._now(conn)
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            conn.execute(insert(leases).values(
                name=self.name, holder=self.holder, acquired_at=now,
                expires_at=now + self.seconds).on_conflict_do_nothing())
            c = leases.c
            renewed = conn.execute(leases.update().where(
                c.name == self.name, sa.or_(c.holder == self.holder, c.expires_at <= now))
                .values(holder=self.holder, expires_at=now + self.seconds,
                        acquired_at=sa.case((c.holder == self.holder, c.acquired_at),
                                            else_=now)))
            if renewed.rowcount != 1:
                return None
        # Counted from before the transaction, on our own clock: never later than the
        # database's view of the expiry.
        return started + self.seconds

    def release(self) -> None:
        """Give the lease up at once (a clean stop), so a successor need not wait."""
        with self.db.write() as conn:
            conn.execute(leases.delete().where(leases.c.name == self.name,
                                               leases.c.holder == self.holder))

    def state(self) -> LeaseState | None:
        with self.db.read() as conn:
            r = conn.execute(sa.select(leases).where(leases.c.name == self.name)).first()
        return None if r is None else LeaseState(r.name, r.holder, r.acquired_at, r.expires_at)
