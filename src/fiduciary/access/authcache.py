"""The authentication cache: a verified API key or staff session, as its built
:class:`~fiduciary.principal.Principal`, kept in memory for the requests that follow.

Keyed by the SHA-256 of the bearer token (never the token), each entry lives at most
``auth_cache_seconds`` and never past a moment its principal changes by itself (midnight,
when a course expires; the end of the training grace; a break-glass grant's expiry; the
key's or session's expiry). Every other change — a key or session revoked, a user disabled,
roles, regions, password, training or break-glass changed, a logout — is made visible AT ONCE
on every worker by one counter in the database, ``auth_generation``, which triggers
(migration 0018) raise in the transaction of the change, whatever process or code path made
it. Each cached request first reads that counter (:class:`GenerationProbe`, on a connection
of its own: ~3 µs on SQLite, one ~30 µs round trip on PostgreSQL) and trusts only entries
built at the same generation. So once a revocation has committed (before it is answered), no
worker answers another request with the revoked principal.

The idle timeout is still enforced exactly: an entry remembers the session's last request
as this worker knows it; when that is older than the idle limit the database decides (another
worker may have seen a later request), and ``last_seen_at`` is written at most every 30 s.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fiduciary.principal import Principal
from fiduciary.storage import Database

log = logging.getLogger("fiduciary.access.authcache")
_READ = "SELECT generation FROM auth_generation WHERE id = 1"
#: PostgreSQL connections a probe opens at most (beside the engine's pool).
PG_CONNECTIONS = 4
#: Entries kept at most; past that the cache starts again (a flood of distinct tokens).
MAX_ENTRIES = 10_000


def token_digest(token: str) -> bytes:
    """What the cache (and the sessions table) keys a bearer token by."""
    return hashlib.sha256(token.encode()).digest()


class GenerationProbe:
    """Reads the ``auth_generation`` counter outside SQLAlchemy's pool and transactions
    (their overhead alone is ~80 µs): SQLite, one connection per thread in autocommit, so
    each read sees the last commit of any process; PostgreSQL, a pool of autocommit
    connections with the statement prepared."""

    def __init__(self, db: Database) -> None:
        url = db.engine.url
        self._sqlite_path = url.database if db.is_sqlite else None
        self._pg_conninfo = (None if db.is_sqlite else
                             url.set(drivername="postgresql").render_as_string(
                                 hide_password=False))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []  # every connection, to close them all
        self._idle: list[Any] = []  # PostgreSQL connections free for the next read
        self._closed = False
        self._pg_slots = threading.BoundedSemaphore(PG_CONNECTIONS)

    def read(self) -> int | None:
        """The current generation; None when it cannot be read (then nothing is cached)."""
        if self._closed:
            return None
        try:
            if self._sqlite_path is not None:
                return self._read_sqlite(self._sqlite_path)
            if self._pg_conninfo is not None:
                return self._read_postgresql(self._pg_conninfo)
        except Exception as e:  # a database that cannot answer: no cache, the slow path
            log.warning("auth generation unreadable (%s): not caching", type(e).__name__)
        return None

    def _read_sqlite(self, path: str) -> int | None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
            with self._lock:
                self._open.append(conn)
            self._local.conn = conn
        # Read to the end: a statement left open would keep a read transaction, pinning
        # the WAL and this connection's snapshot.
        rows = conn.execute(_READ).fetchall()
        return int(rows[0][0]) if rows else None

    def _read_postgresql(self, conninfo: str) -> int | None:
        import psycopg

        with self._pg_slots:  # a few connections serve every thread: one round trip each
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=0)
                with self._lock:
                    self._open.append(conn)
            try:
                row = conn.execute(_READ).fetchone()
            except Exception:
                with self._lock:
                    self._open.remove(conn)
                conn.close()
                raise
            with self._lock:
                self._idle.append(conn)
        return None if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._open, self._idle = self._open, [], []
        for c in conns:
            try:
                c.close()
            except Exception:  # another thread's SQLite connection, or a broken one
                log.debug("auth generation connection not closed cleanly")


@dataclass(slots=True)
class CachedAuth:
    """A verified token: its principal, the generation it was built at, until when it may
    be used, and (sessions, keys) the last use this worker knows of."""

    principal: Principal
    generation: int
    valid_until: datetime
    #: The session's ``last_seen_at`` or the key's ``last_used_at`` as last read or written.
    seen: datetime | None


class AuthCache:
    """Verified tokens of this process (API keys and sessions alike: their prefixes differ)."""

    def __init__(self, probe: GenerationProbe | None, seconds: float) -> None:
        self.probe = probe if seconds > 0 else None
        self.ttl = timedelta(seconds=seconds)
        self._entries: dict[bytes, CachedAuth] = {}

    def lookup(self, digest: bytes, now: datetime) -> tuple[CachedAuth | None, int | None]:
        """The entry for a token, if still good, and the current generation (None: do not
        cache). Read the generation before the database, so that an entry built from a read
        that raced a change carries the older generation and is dropped at its next use."""
        generation = self.probe.read() if self.probe is not None else None
        if generation is None:
            return None, None
        hit = self._entries.get(digest)
        if hit is None:
            return None, generation
        if hit.generation != generation or now >= hit.valid_until:
            self._entries.pop(digest, None)
            return None, generation
        return hit, generation

    def store(self, digest: bytes, principal: Principal, generation: int | None,
              now: datetime, until: datetime | None = None,
              seen: datetime | None = None) -> None:
        """Keep a principal verified at ``generation`` until ``until`` at the latest."""
        if generation is None:
            return
        valid_until = now + self.ttl if until is None else min(now + self.ttl, until)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = CachedAuth(principal, generation, valid_until, seen)

    def clear(self) -> None:
        self._entries.clear()

    def close(self) -> None:
        self.clear()
        if self.probe is not None:
            self.probe.close()


#: A cache that caches nothing (services built without one, e.g. by tests of their own).
NO_CACHE = AuthCache(None, 0)
