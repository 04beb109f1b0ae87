"""Independent verification of the audit trail: recompute the Merkle tree from the stored
events, check every checkpoint's signature, root and consistency with the one before, and
optionally an exported checkpoint kept by an outside witness.

Any edit, deletion, insertion, reordering or truncation of stored events or checkpoints makes
verification fail with a message that names the first event or checkpoint that does not match.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fiduciary.audit import merkle
from fiduciary.audit.events import canonical
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


def verify(db: Database, trusted_key: bytes, witness: dict[str, Any] | None = None,
           retention_days: int = 2191) -> Verified:
    with db.read() as conn:
        rows = conn.execute(sa.select(audit_events.c.leaf_index, audit_events.c.event_id,
                                      audit_events.c.event, audit_events.c.action)
                            .where(audit_events.c.leaf_index.is_not(None))
                            .order_by(audit_events.c.leaf_index)).all()
        recorded = dict(conn.execute(sa.select(audit_nodes.c["index"], audit_nodes.c.hash)
                                     .where(audit_nodes.c.level == 0)).all())
        stored_cps = [Checkpoint.from_row(r)
                      for r in conn.execute(sa.select(audit_checkpoints)
                                            .order_by(audit_checkpoints.c.size))]
        unsequenced = conn.execute(sa.select(sa.func.count()).select_from(audit_events)
                                   .where(audit_events.c.leaf_index.is_(None))).scalar_one()
    tree = merkle.MemoryNodes()
    recorded_cps: list[tuple[int, dict[str, Any]]] = []
    pruned: list[int] = []
    prunes: list[tuple[int, dict[str, Any]]] = []
    for expected, r in enumerate(rows):
        where = f"event at leaf index {expected}"
        if r.leaf_index != expected:
            raise VerificationFailed(f"{where} is missing (the next stored event has index "
                                     f"{r.leaf_index}, id {r.event_id}): events were deleted "
                                     "or re-numbered")
        if r.event is None:
            # Pruned after retention: its recorded leaf hash keeps the tree whole.
            if expected not in recorded:
                raise VerificationFailed(f"{where} (id {r.event_id}) was removed and its leaf "
                                         "hash is gone")
            pruned.append(expected)
            tree.append(recorded[expected])
            continue
        try:
            obj = json.loads(r.event)
        except ValueError:
            raise VerificationFailed(f"{where} (id {r.event_id}) is not valid JSON") from None
        if not isinstance(obj, dict) or canonical(obj).decode() != r.event:
            raise VerificationFailed(f"{where} (id {r.event_id}) was altered: it is not the "
                                     "canonical JSON it was stored as")
        leaf = merkle.leaf_hash(r.event.encode())
        if obj.get("id") != r.event_id or recorded.get(expected, leaf) != leaf:
            raise VerificationFailed(f"{where} (id {r.event_id}) does not match the leaf "
                                     "hash recorded when it was sequenced: edited, swapped or "
                                     "inserted")
        tree.append(leaf)
        if r.action == CHECKPOINT_ACTION:
            recorded_cps.append((expected, obj.get("details", {})))
        if r.action == PRUNE_ACTION:
            prunes.append((expected, obj))
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


def _check_witness(doc: dict[str, Any], trusted_key: bytes, tree: merkle.MemoryNodes,
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
