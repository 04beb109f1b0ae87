"""The audit trail, verified incrementally for the daily posture check.

Verifying every event from scratch (``audit.verify``) costs time in proportion to the whole
trail. The posture remembers the size and root it last verified (``system_state``
``compliance.audit_verified``) and, on the next run, checks only what is new:

- no leaf index is missing below the stored size, and the size has not fallen below the
  remembered one (rows deleted: a truncated trail fails);
- the stored tree still has the remembered root over the first ``N`` leaves;
- every new event is the canonical JSON whose leaf hash was recorded when it was sequenced;
- the tree over old and new leaves (the new part recomputed from the events) is consistent
  with the remembered root (an RFC 9162 consistency proof, verified);
- the latest checkpoint and every checkpoint newer than the remembered size carry a valid
  signature and the root of the events they cover, and none covers more events than are
  stored (a checkpoint the rows no longer reach).

An edit to an event verified on an earlier run is found only by a full verification, which
also starts the remembered state afresh. The check runs one when the last was ``full_every``
or longer ago (the control's ``full_every_days``, 7 by default), when asked
(``fiduciary compliance check --full``), and when there is no remembered state.
``fiduciary audit verify`` verifies in full too.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fiduciary.audit import merkle
from fiduciary.audit.events import canonical
from fiduciary.audit.trail import CHECKPOINT_ACTION, AuditTrail, Checkpoint, b64
from fiduciary.audit.verify import check_signature, verify
from fiduciary.clock import iso
from fiduciary.errors import NotFound, VerificationFailed
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    audit_checkpoints,
    audit_events,
    audit_nodes,
    system_state,
)

STATE_KEY = "compliance.audit_verified"


@dataclass(frozen=True)
class TrailState:
    """What a verification established: the tree size and root, and the latest checkpoint."""

    size: int
    root: bytes
    mode: str  # full | incremental
    verified_from: int
    checkpoint: Checkpoint | None
    unsequenced: int

    def facts(self, now: datetime) -> dict[str, Any]:
        cp = self.checkpoint
        return {"verification": self.mode, "events_verified": self.size - self.verified_from,
                "tree_size": self.size, "root": b64(self.root),
                "unsequenced_events": self.unsequenced,
                "latest_checkpoint": None if cp is None else {
                    "size": cp.size, "timestamp": iso(cp.timestamp),
                    "age_hours": round((now - cp.timestamp).total_seconds() / 3600, 1)}}


class _Rebuild:
    """Tree nodes: stored ones wholly below ``old`` leaves (the remembered root vouches for
    them), the rest recomputed from the new events' leaf hashes."""

    def __init__(self, stored: merkle.GetNode, old: int, leaves: dict[int, bytes]) -> None:
        self.stored, self.old, self.leaves = stored, old, leaves
        self.cache: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        if (index + 1) << level <= self.old:
            return self.stored(level, index)
        if level == 0:
            return self.leaves[index]
        hit = self.cache.get((level, index))
        if hit is None:
            hit = merkle.node_hash(self.get(level - 1, 2 * index),
                                   self.get(level - 1, 2 * index + 1))
            self.cache[(level, index)] = hit
        return hit


class _NeedsFull(Exception):
    """The new range holds something only a full verification judges (a pruned event)."""


def _remembered(db: Database) -> dict[str, Any] | None:
    """What the last run verified: ``size``, ``root`` and, since the weekly full run,
    ``full_at`` (when the whole trail was last verified)."""
    with db.read() as conn:
        raw = conn.execute(sa.select(system_state.c.value).where(
            system_state.c.key == STATE_KEY)).scalar()
    return None if raw is None else dict(json.loads(raw))


def verify_trail(db: Database, trail: AuditTrail, retention_days: int, now: datetime,
                 full: bool = False, full_every: timedelta | None = None) -> TrailState:
    """Verify (incrementally from the remembered state, or in full) and remember the result;
    in full also when the last full verification is ``full_every`` old or older. Raises
    :class:`VerificationFailed` naming what does not match."""
    doc = None if full else _remembered(db)
    if doc is not None and full_every is not None:
        at = doc.get("full_at")
        last = None if at is None else datetime.fromisoformat(at)
        # A date ahead of now was not written by this check: it would postpone the next.
        if last is None or last > now or now - last >= full_every:
            doc = None
    start = ((int(doc["size"]), base64.b64decode(doc["root"])) if doc is not None
             else (0, merkle.EMPTY_ROOT))
    state = None
    try:
        state = _incremental(db, trail.public_key, *start)
    except _NeedsFull:
        state = None
    if state is None:  # pruned events: the audit verifier judges their prunes
        try:
            done = verify(db, trail.public_key, retention_days=retention_days)
        except VerificationFailed:
            if db.is_sqlite:
                raise
            # PostgreSQL reads each statement at its own moment: a checkpoint the sequencer
            # committed after the events were read looks like a truncation. A real fault
            # fails again.
            done = verify(db, trail.public_key, retention_days=retention_days)
        with db.read() as conn:
            cp = trail.checkpoint_in(conn)
        state = TrailState(done.size, done.root, "full", 0, cp, done.unsequenced)
    _remember(db, state, now)
    return state


def _remember(db: Database, state: TrailState, now: datetime) -> None:
    """Keep what was verified; an incremental run never moves it back (a slower concurrent
    run), a full one starts it afresh (a store restored from a backup is shorter) and is
    remembered as the last full verification."""
    with db.write() as conn:
        raw = conn.execute(sa.select(system_state.c.value).where(
            system_state.c.key == STATE_KEY)).scalar()
        before = {} if raw is None else json.loads(raw)
        full_at = iso(now) if state.mode == "full" else before.get("full_at")
        value = json.dumps({"size": state.size, "root": b64(state.root), "at": iso(now),
                            "full_at": full_at}, sort_keys=True)
        if raw is None:
            conn.execute(system_state.insert(), [{"key": STATE_KEY, "value": value}])
        elif state.mode == "full" or int(before["size"]) <= state.size:
            conn.execute(system_state.update().where(system_state.c.key == STATE_KEY)
                         .values(value=value))


def _incremental(db: Database, trusted: bytes, old: int, old_root: bytes) -> TrailState:
    with db.read() as conn:
        # The checkpoint first: the sequencer stores a checkpoint with the leaves it covers,
        # so the size read after it is at least its size unless rows went.
        latest = AuditTrail.checkpoint_in(conn)
        top = conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar()
        size = 0 if top is None else int(top) + 1
        if size < old:
            raise VerificationFailed(f"the trail holds {size} sequenced events, fewer than "
                                     f"the {old} verified before: it was truncated")
        if latest is not None and latest.size > size:
            raise VerificationFailed(f"checkpoint size {latest.size}: covers more events than "
                                     f"are stored ({size}): the log was truncated")
        count = conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
            audit_events.c.leaf_index < size)).scalar_one()
        if count != size:
            raise VerificationFailed(f"{size - count} of the events below leaf index {size} "
                                     "are missing: events were deleted")
        stored = AuditTrail.node_reader(conn)
        try:
            if merkle.root(old, stored) != old_root:
                raise VerificationFailed(f"the first {old} events no longer have the root "
                                         "verified before: history was rewritten")
            leaves, recorded_cps = _new_leaves(conn, old, size)
            tree = _Rebuild(stored, old, leaves)
            root = merkle.root(size, tree.get)
            if 0 < old < size:
                merkle.verify_consistency(old, size, old_root, root,
                                          merkle.consistency_proof(old, size, tree.get))
            cps = [Checkpoint.from_row(r) for r in conn.execute(
                sa.select(audit_checkpoints).where(audit_checkpoints.c.size > old,
                                                   audit_checkpoints.c.size <= size)
                .order_by(audit_checkpoints.c.size))]
            if latest is not None and latest.size <= old:
                cps.append(latest)
            for cp in cps:
                _check_checkpoint(cp, trusted, tree)
            # The log records its own checkpoints: a stored one deleted or altered shows.
            by_size = {cp.size: cp for cp in cps}
            for index, details in recorded_cps:
                found = by_size.get(int(details.get("size", -1)))
                if found is None and 0 <= int(details.get("size", -1)) <= size:
                    found = AuditTrail.checkpoint_in(conn, int(details["size"]))
                if found is None or b64(found.root) != details.get("root"):
                    raise VerificationFailed(
                        f"checkpoint size {details.get('size')}, recorded by the event at "
                        f"leaf index {index}, is missing or altered")
        except NotFound:
            raise VerificationFailed("a stored tree node is missing: the tree was "
                                     "altered") from None
        except merkle.ProofError as exc:
            raise VerificationFailed(f"the trail of {size} events is not consistent with the "
                                     f"{old} verified before ({exc})") from None
        unsequenced = conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
            audit_events.c.leaf_index.is_(None))).scalar_one()
    return TrailState(size, root, "incremental" if old else "full", old, latest,
                      int(unsequenced))


def _new_leaves(conn: sa.Connection, old: int, size: int
                ) -> tuple[dict[int, bytes], list[tuple[int, dict[str, Any]]]]:
    """Leaf index -> leaf hash of the events in ``[old, size)``, each checked against its
    canonical form and the leaf hash recorded when it was sequenced; and the checkpoints
    the trail recorded there (leaf index, details)."""
    leaves: dict[int, bytes] = {}
    recorded_cps: list[tuple[int, dict[str, Any]]] = []
    recorded = audit_nodes.alias("recorded")
    rows = conn.execute(
        sa.select(audit_events.c.leaf_index, audit_events.c.event_id, audit_events.c.event,
                  audit_events.c.action, recorded.c.hash)
        .outerjoin(recorded, sa.and_(recorded.c.level == 0,
                                     recorded.c["index"] == audit_events.c.leaf_index))
        .where(audit_events.c.leaf_index >= old, audit_events.c.leaf_index < size)
        .order_by(audit_events.c.leaf_index).execution_options(yield_per=5000))
    for r in rows:
        where = f"event at leaf index {r.leaf_index} (id {r.event_id})"
        if r.event is None:
            raise _NeedsFull()
        try:
            obj = json.loads(r.event)
        except ValueError:
            raise VerificationFailed(f"{where} is not valid JSON") from None
        if not isinstance(obj, dict) or not _canonical(obj, r.event):
            raise VerificationFailed(f"{where} was altered: it is not the canonical JSON it "
                                     "was stored as")
        leaf = merkle.leaf_hash(r.event.encode())
        if obj.get("id") != r.event_id or r.hash != leaf:
            raise VerificationFailed(f"{where} does not match the leaf hash recorded when it "
                                     "was sequenced: edited, swapped or inserted")
        leaves[r.leaf_index] = leaf
        if r.action == CHECKPOINT_ACTION:
            recorded_cps.append((r.leaf_index, obj.get("details") or {}))
    return leaves, recorded_cps


def _canonical(obj: dict[str, Any], text: str) -> bool:
    """``text`` is the RFC 8785 form of ``obj``, by the audit log's own encoder, as ``audit
    verify`` proves it: the standard library's sorted compact form would also accept ``1.0``
    where RFC 8785 writes ``1``. What RFC 8785 cannot write (NaN, an integer beyond I-JSON)
    is not canonical either."""
    try:
        return canonical(obj).decode() == text
    except ValueError:
        return False


def _check_checkpoint(cp: Checkpoint, trusted: bytes, tree: _Rebuild) -> None:
    check_signature(cp, trusted, "checkpoint")
    if merkle.root(cp.size, tree.get) != cp.root:
        raise VerificationFailed(f"checkpoint size {cp.size}: its root does not match the "
                                 "stored events")
