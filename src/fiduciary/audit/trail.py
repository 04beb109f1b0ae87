"""The Merkle log over audit events: a sequencer that assigns contiguous leaf indexes in commit
order and signs checkpoints (Ed25519), proofs for any verifier, and the events query.

Leaf hash = SHA-256(0x00 ‖ JCS(event)); node hash = SHA-256(0x01 ‖ left ‖ right) (RFC 9162).
A checkpoint signs the RFC 8785 canonical JSON of ``{"size", "root", "timestamp"}``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.engine import Connection

from fiduciary.audit import merkle
from fiduciary.audit.events import AuditLog, canonical
from fiduciary.clock import Clock, iso
from fiduciary.crypto.keyring import Keyring
from fiduciary.errors import FieldProblem, InvalidInput, NotFound
from fiduciary.storage import Database
from fiduciary.storage.driver import DriverQuery
from fiduciary.storage.schema import (
    audit_checkpoints,
    audit_events,
    audit_nodes,
    audit_subjects,
)

CHECKPOINT_ACTION = "audit.checkpoint"
PRUNE_ACTION = "audit.prune"
_PG_LOCK = 0x46494455  # advisory lock id: one sequencer at a time across servers
#: Largest sequence number, leaf index or tree size a query may name (SQL BIGINT).
MAX_SEQ = 2**63 - 1
#: Most events one page of ``events`` returns.
MAX_EVENTS_PAGE = 1000


def _exists_in_utc(when: datetime) -> bool:
    """False for an instant outside the years 1 to 9999 in UTC (0001-01-01T00:00+14:00)."""
    try:
        (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        return False
    return True


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    timestamp: datetime
    signature: bytes
    public_key: bytes

    @classmethod
    def from_row(cls, r: Any) -> Checkpoint:
        """From a row of ``audit_checkpoints``."""
        return cls(r.size, r.root, r.timestamp, r.signature, r.public_key)

    def signed_message(self) -> bytes:
        return checkpoint_message(self.size, self.root, self.timestamp)

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "root": b64(self.root),
                "timestamp": iso(self.timestamp), "signature": b64(self.signature),
                "public_key": b64(self.public_key)}



def checkpoint_message(size: int, root: bytes, timestamp: datetime) -> bytes:
    return canonical({"size": size, "root": b64(root), "timestamp": iso(timestamp)})


def signing_key(keyring: Keyring) -> Ed25519PrivateKey:
    """The checkpoint signing key, derived from the keyring (never stored in the database)."""
    return Ed25519PrivateKey.from_private_bytes(keyring.derive_key("audit-signing/ed25519"))


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# The sequencer's writes, a few per event: on the driver's executemany, not SQLAlchemy's.
_INSERT_NODES = DriverQuery(audit_nodes.insert())
_SET_LEAF_INDEX = DriverQuery(audit_events.update().where(
    audit_events.c.seq == sa.bindparam("s")).values(leaf_index=sa.bindparam("i")))


class _Nodes:
    """Tree nodes from the database, with what this transaction added kept in memory."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cache: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        key = (level, index)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.conn.execute(sa.select(audit_nodes.c.hash).where(
                audit_nodes.c.level == level, audit_nodes.c["index"] == index)).scalar()
            if hit is None:
                raise NotFound(f"tree node ({level}, {index}) missing", code="tree_node_missing")
            self.cache[key] = hit
        return hit


class AuditTrail:
    def __init__(self, db: Database, keyring: Keyring, clock: Clock, log: AuditLog,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 5.0) -> None:
        self.db = db
        self.clock = clock
        self.log = log
        self.key = signing_key(keyring)
        self.public_key = public_key_bytes(self.key)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds

    # -- sequencing ----------------------------------------------------------------------------
    def sequence(self, batch_size: int = 5000, force_checkpoint: bool = False) -> int:
        """Give unsequenced events the next leaf indexes (commit order), store the new tree
        nodes, and sign a checkpoint when due. Returns the tree size."""
        with self.db.write() as conn:
            if not self.db.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            size = self._size(conn)
            rows = conn.execute(
                sa.select(audit_events.c.seq, audit_events.c.event)
                .where(audit_events.c.leaf_index.is_(None))
                .order_by(audit_events.c.seq).limit(batch_size)).all()
            nodes = _Nodes(conn)
            new_nodes: list[dict[str, Any]] = []
            for r in rows:
                leaf = merkle.leaf_hash(r.event.encode())
                for level, index, h in merkle.nodes_to_store(size, leaf, nodes.get):
                    nodes.cache[(level, index)] = h
                    new_nodes.append({"level": level, "index": index, "hash": h})
                size += 1
            if rows:
                _INSERT_NODES.many(conn, new_nodes)
                _SET_LEAF_INDEX.many(conn, [{"s": r.seq, "i": i} for i, r in enumerate(
                    rows, start=size - len(rows))])
            if self._checkpoint_due(conn, size, force_checkpoint):
                self._checkpoint(conn, size, nodes)
            return size

    @staticmethod
    def _size(conn: Connection) -> int:
        top = conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar()
        return 0 if top is None else int(top) + 1

    def _checkpoint_due(self, conn: Connection, size: int, force: bool) -> bool:
        last = conn.execute(sa.select(audit_checkpoints.c.size, audit_checkpoints.c.timestamp)
                            .order_by(audit_checkpoints.c.size.desc()).limit(1)).first()
        last_size = last.size if last else 0
        if size <= last_size:
            return False
        # Checkpoint events alone do not call for another checkpoint (no endless ticking).
        substantive = conn.execute(
            sa.select(sa.func.count()).select_from(audit_events).where(
                audit_events.c.leaf_index >= last_size,
                audit_events.c.action != CHECKPOINT_ACTION)).scalar_one()
        if not substantive:
            return False
        if force or size - last_size >= self.checkpoint_every or last is None:
            return True
        elapsed = (self.clock.now() - last.timestamp).total_seconds()
        return bool(elapsed >= self.checkpoint_seconds)

    def _checkpoint(self, conn: Connection, size: int, nodes: _Nodes) -> Checkpoint:
        root = merkle.root(size, nodes.get)
        now = self.clock.now()
        cp = Checkpoint(size, root, now, self.key.sign(checkpoint_message(size, root, now)),
                        self.public_key)
        conn.execute(audit_checkpoints.insert(), [{
            "size": cp.size, "root": cp.root, "timestamp": cp.timestamp,
            "signature": cp.signature, "public_key": cp.public_key}])
        # The log records its own checkpoints, so deleting a stored one is detectable.
        self.log.append(conn, self.log.event(None, CHECKPOINT_ACTION, details={
            "size": size, "root": b64(root), "timestamp": iso(now)}))
        return cp

    def prune(self, retention_days: int, dry_run: bool = False) -> dict[str, Any]:
        """Remove the content of events past retention, keeping leaf hashes and every signed
        checkpoint so the rest still verifies. Only events before a checkpoint *signed* before
        the cutoff go: signed timestamps, not event times a DBA could edit, decide what is old.
        The prune records itself and is sequenced at once, so verification can tell it from
        tampering."""
        now = self.clock.now()
        cutoff = now - timedelta(days=retention_days)
        with self.db.write() as conn:
            below = int(conn.execute(sa.select(sa.func.max(audit_checkpoints.c.size)).where(
                audit_checkpoints.c.timestamp < cutoff)).scalar() or 0)
            count = int(conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
                audit_events.c.leaf_index < below, audit_events.c.event.is_not(None)))
                .scalar_one())
            result = {"cutoff": iso(cutoff), "pruned_below_index": below, "events": count,
                      "dry_run": dry_run}
            if dry_run or count == 0:
                return result
            conn.execute(audit_subjects.delete().where(audit_subjects.c.event_id.in_(
                sa.select(audit_events.c.event_id).where(audit_events.c.leaf_index < below))))
            conn.execute(audit_events.update().where(audit_events.c.leaf_index < below)
                         .values(event=None, subject_ids="", record_ids=""))
            self.log.append(conn, self.log.event(None, PRUNE_ACTION, details={
                "cutoff": iso(cutoff), "pruned_below_index": below, "events": count,
                "retention_days": retention_days}))
        self.sequence(force_checkpoint=True)
        return result

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        """The sequencer loop ``fiduciary serve`` runs in a background thread."""
        while not stop.wait(interval):
            try:
                self.sequence()
            except Exception:
                import logging

                logging.getLogger("fiduciary.audit").exception("sequencer round failed")

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def node_reader(conn: Connection) -> merkle.GetNode:
        """Stored tree nodes through ``conn``, for proofs built inside a caller's read."""
        return _Nodes(conn).get

    @staticmethod
    def checkpoint_in(conn: Connection, size: int | None = None) -> Checkpoint | None:
        """The checkpoint of tree size ``size`` (None: the latest), read through ``conn``."""
        q = sa.select(audit_checkpoints)
        q = q.where(audit_checkpoints.c.size == size) if size is not None else \
            q.order_by(audit_checkpoints.c.size.desc()).limit(1)
        r = conn.execute(q).first()
        return Checkpoint.from_row(r) if r is not None else None

    @staticmethod
    def event_proofs(conn: Connection, event_ids: list[str], size: int | None
                     ) -> dict[str, tuple[int | None, str | None, list[bytes] | None]]:
        """Per stored event id: its leaf index, its canonical JSON (None once pruned) and its
        inclusion proof in the tree of ``size`` leaves (None while that tree does not cover
        it, or with no size). Evidence a verifier checks offline."""
        out: dict[str, tuple[int | None, str | None, list[bytes] | None]] = {}
        nodes = _Nodes(conn).get
        for k in range(0, len(event_ids), 500):
            for r in conn.execute(sa.select(audit_events.c.event_id, audit_events.c.leaf_index,
                                            audit_events.c.event).where(
                    audit_events.c.event_id.in_(event_ids[k:k + 500]))):
                covered = size is not None and r.leaf_index is not None and r.leaf_index < size
                out[r.event_id] = (r.leaf_index, r.event, merkle.inclusion_proof(
                    r.leaf_index, size, nodes) if covered and size is not None else None)
        return out

    def latest_checkpoint(self) -> Checkpoint:
        with self.db.read() as conn:
            cp = self.checkpoint_in(conn)
        if cp is None:
            raise NotFound("no checkpoint yet", code="no_checkpoint")
        return cp

    def checkpoints(self) -> list[Checkpoint]:
        with self.db.read() as conn:
            return [Checkpoint.from_row(r) for r in conn.execute(
                sa.select(audit_checkpoints).order_by(audit_checkpoints.c.size))]

    def inclusion(self, index: int, size: int) -> dict[str, Any]:
        with self.db.read() as conn:
            tree = self._size(conn)
            if not 0 <= index < size <= tree:
                raise InvalidInput("need 0 <= index < size <= tree size",
                                   [FieldProblem("index", f"tree size is {tree}")])
            nodes = _Nodes(conn)
            proof = merkle.inclusion_proof(index, size, nodes.get)
            leaf = nodes.get(0, index)
        return {"index": index, "size": size, "leaf_hash": b64(leaf),
                "proof": [b64(p) for p in proof]}

    def consistency(self, size1: int, size2: int) -> dict[str, Any]:
        with self.db.read() as conn:
            tree = self._size(conn)
            if not 0 < size1 <= size2 <= tree:
                raise InvalidInput("need 0 < from <= to <= tree size",
                                   [FieldProblem("from", f"tree size is {tree}")])
            proof = merkle.consistency_proof(size1, size2, _Nodes(conn).get)
        return {"from": size1, "to": size2, "proof": [b64(p) for p in proof]}

    def events(self, *, subject_id: str | None = None, record_id: str | None = None,
               actor: str | None = None, action: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               limit: int = 100, cursor: int | None = None) -> tuple[list[dict[str, Any]],
                                                                      int | None]:
        problems = []
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            problems.append(FieldProblem("limit", f"1 to {MAX_EVENTS_PAGE}"))
        if cursor is not None and not 0 <= cursor <= MAX_SEQ:
            problems.append(FieldProblem("cursor", "a next_cursor this API returned"))
        for name, when in (("since", since), ("until", until)):
            if when is not None and not _exists_in_utc(when):
                problems.append(FieldProblem(name, "out of range (years 1 to 9999 in UTC)"))
        if problems:
            raise InvalidInput.from_problems(problems, what="query")
        q = sa.select(audit_events.c.seq, audit_events.c.event, audit_events.c.leaf_index)
        if subject_id:
            q = q.where(audit_events.c.event_id.in_(sa.select(audit_subjects.c.event_id).where(
                audit_subjects.c.subject_id == subject_id)))
        if record_id:
            q = q.where(audit_events.c.record_ids.contains(record_id, autoescape=True))
        if actor:
            q = q.where(audit_events.c.actor == actor)
        if action:
            q = q.where(audit_events.c.action == action)
        if since:
            q = q.where(audit_events.c.at >= since)
        if until:
            q = q.where(audit_events.c.at < until)
        if cursor:
            q = q.where(audit_events.c.seq > cursor)
        with self.db.read() as conn:
            rows = conn.execute(q.order_by(audit_events.c.seq).limit(limit + 1)).all()
        items = [{"index": r.leaf_index, "event": json.loads(r.event),
                  "leaf_hash": b64(merkle.leaf_hash(r.event.encode()))}
                 for r in rows[:limit] if r.event is not None]
        return items, (rows[limit - 1].seq if len(rows) > limit else None)

    def last_seq(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit_events.c.seq),
                                                               0))).scalar_one())

    def follow(self, since_seq: int = 0, poll: float = 1.0,
               stop: threading.Event | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """Events as they commit, forever (or until ``stop``)."""
        seq = since_seq
        while stop is None or not stop.is_set():
            with self.db.read() as conn:
                rows = conn.execute(sa.select(audit_events.c.seq, audit_events.c.event)
                                    .where(audit_events.c.seq > seq)
                                    .order_by(audit_events.c.seq).limit(1000)).all()
            for r in rows:
                seq = r.seq
                if r.event is not None:
                    yield r.seq, json.loads(r.event)
            if not rows:
                time.sleep(poll)
