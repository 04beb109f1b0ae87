"""Independent verification of the audit trail: recompute the Merkle tree from the stored
events, check every checkpoint's signature, root and consistency with the one before, and
optionally an exported checkpoint kept by an outside witness.

Any edit, deletion, insertion, reordering or truncation of stored events or checkpoints makes
verification fail with a message that names the first event or checkpoint that does not match.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from fiduciary.audit import merkle
from fiduciary.audit.jcs import canonical, stored_is_canonical
from fiduciary.audit.trail import (
    CHECKPOINT_ACTION,
    PRUNE_ACTION,
    Checkpoint,
    b64,
    checkpoint_message,
)
from fiduciary.errors import VerificationFailed
from fiduciary.storage import Database
from fiduciary.storage.schema import audit_checkpoints, audit_events, audit_nodes


@dataclass(frozen=True)
class Verified:
    size: int
    root: bytes
    checkpoints: int
    latest_checkpoint: int
    unsequenced: int

    def as_dict(self) -> dict[str, Any]:
        return {"verified": True, "size": self.size, "root": b64(self.root),
                "checkpoints": self.checkpoints, "latest_checkpoint": self.latest_checkpoint,
                "events_after_latest_checkpoint": self.size - self.latest_checkpoint,
                "unsequenced_events": self.unsequenced}


def check_signature(cp: Checkpoint, trusted: bytes, what: str) -> None:
    """The checkpoint is signed by ``trusted`` (the audit key) and the signature holds."""
    if cp.public_key != trusted:
        raise VerificationFailed(f"{what} size {cp.size}: signed by an unknown key")
    try:
        Ed25519PublicKey.from_public_bytes(trusted).verify(cp.signature, cp.signed_message())
    except InvalidSignature:
        raise VerificationFailed(f"{what} size {cp.size}: signature does not verify "
                                 "(altered size, root or timestamp)") from None


#: Rows fetched per round trip while verifying: big enough that the driver, not Python,
#: does the looping; small enough that a million-event trail never sits in memory as rows.
_CHUNK = 10_000


#: Per dialect, compiled once: events in leaf order; recorded leaf hashes in an index range.
_SQL: dict[str, tuple[str, str]] = {}


def _compiled(dialect: sa.Dialect) -> tuple[str, str]:
    e, n = audit_events, audit_nodes
    # The stored text as bytes, as the leaf hash covers it (a bytea cast would unescape).
    text = (sa.cast(e.c.event, sa.LargeBinary) if dialect.name == "sqlite"
            else sa.func.convert_to(e.c.event, sa.literal_column("'UTF8'")))
    events = (sa.select(e.c.leaf_index, e.c.event_id, text, e.c.action)
              .where(e.c.leaf_index.is_not(None)).order_by(e.c.leaf_index))
    leaves = (sa.select(n.c["index"], n.c.hash)
              .where(n.c.level == sa.literal_column("0"),
                     n.c["index"].between(sa.bindparam("lo"), sa.bindparam("hi"))))
    return (str(events.compile(dialect=dialect)),
            str(leaves.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})))


def _event_rows(conn: Connection, is_sqlite: bool
                ) -> Iterator[tuple[list[Any], dict[int, bytes]]]:
    """Sequenced events in leaf order as raw driver tuples ``(leaf_index, event_id, event
    bytes or None, action)``, a chunk at a time, with the leaf hashes recorded at sequencing
    for the chunk's range of indexes. The raw cursor skips SQLAlchemy's per-row objects (a
    third of the time over a large trail); the bytes come straight from the database, as the
    leaf hash covers them; one range read of the recorded hashes per chunk is cheaper than a
    join per event."""
    sql = _SQL.get(conn.dialect.name)
    if sql is None:
        sql = _SQL[conn.dialect.name] = _compiled(conn.dialect)
    raw = conn.connection.driver_connection
    assert raw is not None
    # PostgreSQL: a named (server-side) cursor streams instead of loading every row.
    events = raw.cursor() if is_sqlite else raw.cursor(name="fiduciary_audit_verify")
    leaves = raw.cursor()
    bounds = {"lo": 0, "hi": 0}
    try:
        events.execute(sql[0])
        while rows := events.fetchmany(_CHUNK):
            bounds["lo"], bounds["hi"] = rows[0][0], rows[-1][0]
            leaves.execute(sql[1], bounds if not is_sqlite else (bounds["lo"], bounds["hi"]))
            yield rows, dict(leaves.fetchall())
    finally:
        events.close()
        leaves.close()


def _check_event(where: str, event_id: str, text: bytes, recorded: bytes | None
                 ) -> tuple[dict[str, Any], bytes]:
    """The full check of one stored event, raising what verification has always reported:
    valid JSON, its RFC 8785 form, its id and the leaf hash recorded when it was sequenced.
    Returns the event and its leaf hash."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise VerificationFailed(f"{where} (id {event_id}) is not valid JSON") from None
    if not isinstance(obj, dict) or canonical(obj) != text:
        raise VerificationFailed(f"{where} (id {event_id}) was altered: it is not the "
                                 "canonical JSON it was stored as")
    leaf = merkle.leaf_hash(text)
    if obj.get("id") != event_id or (recorded is not None and recorded != leaf):
        raise VerificationFailed(f"{where} (id {event_id}) does not match the leaf "
                                 "hash recorded when it was sequenced: edited, swapped or "
                                 "inserted")
    return obj, leaf


@dataclass
class _Leaves:
    """What one pass over the stored events yields."""

    hashes: list[bytes]
    recorded_cps: list[tuple[int, dict[str, Any]]]
    prunes: list[tuple[int, dict[str, Any]]]
    pruned: list[int]


def _read_leaves(conn: Connection, is_sqlite: bool) -> _Leaves:
    """Every sequenced event checked (see ``_check_event``) and hashed, in leaf order. A
    chunk of events takes the fast path (``_chunk_plain``) unless anything in it looks
    unusual; then the chunk is checked event by event (``_chunk_exact``), so what a
    tampered trail reports does not depend on the path."""
    out = _Leaves([], [], [], [])
    expected = 0
    for chunk, recorded in _event_rows(conn, is_sqlite):
        if not _chunk_plain(chunk, recorded, expected, out):
            _chunk_exact(chunk, recorded, expected, out)
        expected += len(chunk)
    return out


_SPECIAL = (CHECKPOINT_ACTION, PRUNE_ACTION)


def _chunk_plain(chunk: list[Any], recorded: dict[int, bytes], first: int,
                 out: _Leaves) -> bool:
    """The whole chunk at once, when it is what the audit log writes: contiguous indexes,
    no pruned event, every text provably canonical (``stored_is_canonical``), its id the
    row's, its leaf hash the one recorded. False (nothing added) at the first doubt."""
    n = len(chunk)
    # Leaf indexes are unique and sorted: contiguous exactly when both ends are where due.
    if chunk[0][0] != first or chunk[-1][0] != first + n - 1:
        return False
    texts = [r[2] for r in chunk]
    if None in texts:
        return False
    # Ids only: a chunk of parsed events kept alive costs more in the garbage collector
    # than the parsing itself.
    ids = list(map(_canonical_id, texts))
    if None in ids:
        try:  # the few events (non-ASCII, a float, a surprise) the fast proof left open
            for k, r in enumerate(chunk):
                if ids[k] is None:
                    ids[k] = _check_event("", r[1], r[2], recorded.get(r[0]))[0].get("id")
        except VerificationFailed:
            return False  # reported by the exact pass, after whatever fails before it
    if ids != [r[1] for r in chunk]:
        return False
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + t).digest() for t in texts]
    if [recorded.get(i) for i in range(first, first + n)] != leaves:
        return False
    out.hashes.extend(leaves)
    for k in [k for k, r in enumerate(chunk) if r[3] in _SPECIAL]:
        event = json.loads(texts[k])
        if chunk[k][3] == CHECKPOINT_ACTION:
            out.recorded_cps.append((first + k, event.get("details", {})))
        else:
            out.prunes.append((first + k, event))
    return True


def _canonical_id(text: bytes) -> Any:
    """The event's id when the stored text is provably canonical, else None."""
    event = stored_is_canonical(text)
    return None if event is None else event.get("id")


def _chunk_exact(chunk: list[Any], recorded_hashes: dict[int, bytes], first: int,
                 out: _Leaves) -> None:
    """Event by event, raising at the first that fails (today's messages, today's order)."""
    expected = first
    for index, event_id, text, action in chunk:
        recorded = recorded_hashes.get(index)
        if index != expected:
            raise VerificationFailed(
                f"event at leaf index {expected} is missing (the next stored event has "
                f"index {index}, id {event_id}): events were deleted or re-numbered")
        if text is None:
            # Pruned after retention: its recorded leaf hash keeps the tree whole.
            if recorded is None:
                raise VerificationFailed(f"event at leaf index {expected} (id {event_id}) "
                                         "was removed and its leaf hash is gone")
            out.pruned.append(expected)
            out.hashes.append(recorded)
        else:
            obj, leaf = _check_event(f"event at leaf index {expected}", event_id, text,
                                     recorded)
            out.hashes.append(leaf)
            if action == CHECKPOINT_ACTION:
                out.recorded_cps.append((expected, obj.get("details", {})))
            elif action == PRUNE_ACTION:
                out.prunes.append((expected, obj))
        expected += 1


def verify(db: Database, trusted_key: bytes, witness: dict[str, Any] | None = None,
           retention_days: int = 2191) -> Verified:
    with db.read() as conn:
        leaves = _read_leaves(conn, db.is_sqlite)
        stored_cps = [Checkpoint.from_row(r)
                      for r in conn.execute(sa.select(audit_checkpoints)
                                            .order_by(audit_checkpoints.c.size))]
        unsequenced = conn.execute(sa.select(sa.func.count()).select_from(audit_events)
                                   .where(audit_events.c.leaf_index.is_(None))).scalar_one()
    tree = merkle.LevelNodes(leaves.hashes)
    recorded_cps, prunes, pruned = leaves.recorded_cps, leaves.prunes, leaves.pruned
    previous: Checkpoint | None = None
    for cp in stored_cps:
        check_signature(cp, trusted_key, "checkpoint")
        if cp.size > tree.size:
            raise VerificationFailed(f"checkpoint size {cp.size}: covers more events than are "
                                     f"stored ({tree.size}): the log was truncated")
        if merkle.root(cp.size, tree.get_node) != cp.root:
            raise VerificationFailed(f"checkpoint size {cp.size}: its root does not match the "
                                     "stored events")
        if previous is not None:
            try:
                merkle.verify_consistency(previous.size, cp.size, previous.root, cp.root,
                                          merkle.consistency_proof(previous.size, cp.size,
                                                                   tree.get_node))
            except merkle.ProofError as exc:
                raise VerificationFailed(f"checkpoint size {cp.size}: not consistent with "
                                         f"checkpoint size {previous.size} ({exc})") from None
        previous = cp
    pruned_below = max((_check_prune(i, e, stored_cps, retention_days) for i, e in prunes),
                       default=0)
    for index in pruned:
        if index >= pruned_below:
            raise VerificationFailed(f"event at leaf index {index} was removed, but no recorded "
                                     "prune covers it (retention not yet reached)")
    by_size = {cp.size: cp for cp in stored_cps}
    for index, details in recorded_cps:
        found = by_size.get(int(details.get("size", -1)))
        if found is None or b64(found.root) != details.get("root"):
            raise VerificationFailed(f"checkpoint size {details.get('size')}, recorded by the "
                                     f"event at leaf index {index}, is missing or altered")
    if witness is not None:
        _check_witness(witness, trusted_key, tree, previous)
    latest = previous.size if previous else 0
    return Verified(tree.size, merkle.root(tree.size, tree.get_node), len(stored_cps), latest,
                    int(unsequenced))


def _check_prune(index: int, event: dict[str, Any], checkpoints: list[Checkpoint],
                 retention_days: int) -> int:
    """A prune event may only cover what signed checkpoints prove old enough."""
    where = f"prune event at leaf index {index}"
    try:
        at = datetime.fromisoformat(event["time"])
        details = event["details"]
        cutoff = datetime.fromisoformat(details["cutoff"])
        below = int(details["pruned_below_index"])
    except (KeyError, TypeError, ValueError):
        raise VerificationFailed(f"{where}: malformed") from None
    covering = next((cp for cp in checkpoints if cp.size > index), None)
    if covering is not None and at > covering.timestamp:
        raise VerificationFailed(f"{where}: dated after the checkpoint that covers it")
    if (at - cutoff).days < retention_days:
        raise VerificationFailed(f"{where}: its cutoff lies inside the retention period")
    allowed = max((cp.size for cp in checkpoints if cp.timestamp < cutoff), default=0)
    if below > allowed:
        raise VerificationFailed(f"{where}: covers events no checkpoint signed before the "
                                 "cutoff proves old enough")
    return below


def _check_witness(doc: dict[str, Any], trusted_key: bytes, tree: merkle.LevelNodes,
                   latest: Checkpoint | None) -> None:
    try:
        cp = Checkpoint(int(doc["size"]), base64.b64decode(doc["root"]),
                        datetime.fromisoformat(doc["timestamp"]),
                        base64.b64decode(doc["signature"]), base64.b64decode(doc["public_key"]))
    except (KeyError, ValueError, TypeError):
        raise VerificationFailed("witness checkpoint: not a Fiduciary checkpoint file") from None
    check_signature(cp, trusted_key, "witness checkpoint")
    if checkpoint_message(cp.size, cp.root, cp.timestamp) != cp.signed_message():
        raise VerificationFailed("witness checkpoint: malformed")
    if cp.size > tree.size or latest is None or cp.size > latest.size:
        raise VerificationFailed(f"witness checkpoint size {cp.size}: the stored log is "
                                 f"shorter ({tree.size} events, latest checkpoint "
                                 f"{latest.size if latest else 0}): it was truncated")
    if merkle.root(cp.size, tree.get_node) != cp.root:
        raise VerificationFailed(f"witness checkpoint size {cp.size}: the stored log no longer "
                                 "has that root: history was rewritten")
