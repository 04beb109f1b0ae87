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
import logging
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from fiduciary.audit import merkle
from fiduciary.audit.jcs import canonical, canonical_ids
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
              .where(e.c.leaf_index.between(sa.bindparam("first"), sa.bindparam("last")))
              .order_by(e.c.leaf_index))
    leaves = (sa.select(n.c["index"], n.c.hash)
              .where(n.c.level == sa.literal_column("0"),
                     n.c["index"].between(sa.bindparam("lo"), sa.bindparam("hi")))
              .order_by(n.c["index"]))
    return (str(events.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})),
            str(leaves.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})))


#: Every leaf index there can be: the whole trail, and whatever an editor put below zero.
_ALL = (-(2**63), 2**63 - 1)


def _event_rows(conn: Connection, is_sqlite: bool, span: tuple[int, int] = _ALL
                ) -> Iterator[tuple[list[Any], list[Any]]]:
    """Sequenced events with leaf indexes in ``span`` (inclusive) in leaf order, as raw
    driver tuples ``(leaf_index, event_id, event bytes or None, action)``, a chunk at a
    time, with the leaf hashes recorded at sequencing
    for the chunk's range of indexes as ``(index, hash)`` in index order. The raw cursor skips
    SQLAlchemy's per-row objects (a third of the time over a large trail); the bytes come
    straight from the database, as the leaf hash covers them; one range read of the recorded
    hashes per chunk is cheaper than a join per event."""
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
        events.execute(sql[0], span if is_sqlite else {"first": span[0], "last": span[1]})
        while rows := events.fetchmany(_CHUNK):
            bounds["lo"], bounds["hi"] = rows[0][0], rows[-1][0]
            leaves.execute(sql[1], bounds if not is_sqlite else (bounds["lo"], bounds["hi"]))
            yield rows, leaves.fetchall()
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


def _read_leaves(conn: Connection, is_sqlite: bool, span: tuple[int, int] = _ALL) -> _Leaves:
    """Every sequenced event (in ``span``) checked (see ``_check_event``) and hashed, in leaf
    order. A chunk of events takes the fast path (``_chunk_plain``) unless anything in it
    looks unusual; then the chunk is checked event by event (``_chunk_exact``), so what a
    tampered trail reports does not depend on the path."""
    out = _Leaves([], [], [], [])
    expected = max(span[0], 0)
    for chunk, recorded in _event_rows(conn, is_sqlite, span):
        if not _chunk_plain(chunk, recorded, expected, out):
            _chunk_exact(chunk, dict(recorded), expected, out)
        expected += len(chunk)
    return out


_SPECIAL = (CHECKPOINT_ACTION, PRUNE_ACTION)
#: A row's event id (or a recorded leaf's hash) and its text.
_ID, _TEXT = itemgetter(1), itemgetter(2)


def _chunk_plain(chunk: list[Any], recorded: list[Any], first: int, out: _Leaves) -> bool:
    """The whole chunk at once, when it is what the audit log writes: contiguous indexes,
    no pruned event, every text provably canonical (``stored_is_canonical``), its id the
    row's, its leaf hash the one recorded. False (nothing added) at the first doubt."""
    n = len(chunk)
    # Leaf indexes are unique and sorted: contiguous exactly when both ends are where due.
    if chunk[0][0] != first or chunk[-1][0] != first + n - 1:
        return False
    texts = list(map(_TEXT, chunk))
    if None in texts:
        return False
    # Ids only: a chunk of parsed events kept alive costs more in the garbage collector
    # than the parsing itself.
    ids = canonical_ids(texts)
    if None in ids:
        try:  # the few events (non-ASCII, a float, a surprise) the fast proof left open
            for k, r in enumerate(chunk):
                if ids[k] is None:
                    ids[k] = _check_event("", r[1], r[2], None)[0].get("id")
        except VerificationFailed:
            return False  # reported by the exact pass, after whatever fails before it
    if ids != list(map(_ID, chunk)):
        return False
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + t).digest() for t in texts]
    # (level, index) is the key and the range is the chunk's: n rows are exactly its indexes.
    if len(recorded) != n or list(map(_ID, recorded)) != leaves:
        return False
    out.hashes.extend(leaves)
    for k in [k for k, r in enumerate(chunk) if r[3] in _SPECIAL]:
        event = json.loads(texts[k])
        if chunk[k][3] == CHECKPOINT_ACTION:
            out.recorded_cps.append((first + k, event.get("details", {})))
        else:
            out.prunes.append((first + k, event))
    return True


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


#: Events per process below which starting one costs more than it saves (~0.5 s to start).
SPLIT_MIN = 100_000
#: About the events this process checks while a helper process starts (imports, ~0.5 s).
_HEAD_START = 60_000
_ALIGNED = 12
log = logging.getLogger("fiduciary.audit")


def span_leaves(url: str, span: tuple[int, int]
                 ) -> tuple[merkle.LevelNodes, list[Any], list[Any], list[int]] | None:
    """A helper process's share of ``_read_split`` (run by ``verify_span``): the events in
    ``span`` through a connection of its own, checked as ``_read_leaves`` checks them; the
    span's tree comes back too (its levels are byte strings: they pickle at memory speed).
    None when anything fails."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn, conn.begin():
            part = _read_leaves(conn, engine.dialect.name == "sqlite", span)
    except VerificationFailed:
        return None
    finally:
        engine.dispose()
    return merkle.LevelNodes(part.hashes), part.recorded_cps, part.prunes, part.pruned


def _read_split(conn: Connection, db: Database, workers: int, split_min: int
                ) -> tuple[_Leaves, merkle.LevelNodes] | None:
    """``_read_leaves`` over ``workers`` cores: the trail as it stands is cut into as many
    index spans; this process checks the first while helper processes (``python -m``, not a
    fork, which could inherit a lock another thread holds) check the others, each span
    exactly as the single pass would. None —
    and the caller verifies in one pass, which names the first fault exactly as always —
    when the trail is too short to gain, or any span fails or is not whole. Sequenced events
    never change, so spans read at slightly different moments make one trail; the last span
    ends at the size seen here, with the checkpoints and counts this connection reads."""
    top = conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar()
    if top is None or int(top) + 1 < workers * split_min:
        return None
    size = int(top) + 1
    # This process takes _HEAD_START more events than a helper: a helper starts that late.
    rest = max(size - _HEAD_START, size // 2) // workers
    # Cuts on multiples of 2**aligned: each span's tree is then the whole tree's, up to there
    # (a short trail, in the tests, is cut finely all the same).
    aligned = min(_ALIGNED, max((rest // 8).bit_length() - 1, 0))
    cuts = [0, *((size - rest * k) >> aligned << aligned for k in range(workers - 1, 0, -1)),
            size]
    spans = [(cuts[k], cuts[k + 1] - 1) for k in range(workers)]
    # Started first, so their start (~0.5 s of imports) overlaps this process's own span.
    helpers = [subprocess.Popen([sys.executable, "-m", "fiduciary.audit.verify_span"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
               for _ in spans[1:]]
    try:
        for helper, span in zip(helpers, spans[1:], strict=True):
            assert helper.stdin is not None
            try:
                helper.stdin.write(json.dumps([db.url, *span]).encode() + b"\n")
                helper.stdin.close()
            except OSError:  # it ended before reading its span: it cannot run
                _helper_failed(helper)
                return None
        try:
            out = _read_leaves(conn, db.is_sqlite, (_ALL[0], spans[0][1]))
        except VerificationFailed:
            return None
        parts = []
        for helper in helpers:
            assert helper.stdout is not None
            result = helper.stdout.read()
            if helper.wait() != 0:  # it could not run (its own error is on stderr): one pass
                _helper_failed(helper)
                return None
            parts.append(pickle.loads(result))  # noqa: S301 - our own child's answer
    finally:
        for helper in helpers:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
    if len(out.hashes) != cuts[1]:
        return None
    trees = [merkle.LevelNodes(out.hashes)]
    for span, part in zip(spans[1:], parts, strict=True):
        if part is None or part[0].size != span[1] - span[0] + 1:
            return None
        trees.append(part[0])
        out.recorded_cps.extend(part[1])
        out.prunes.extend(part[2])
        out.pruned.extend(part[3])
    return out, merkle.LevelNodes.joined(trees, aligned)


def _helper_failed(helper: subprocess.Popen[bytes]) -> None:
    """A helper that cannot run is no verdict on the trail: the caller checks in one pass."""
    log.warning("audit verification helper exited with %s; verifying in one process",
                helper.wait())


def verify(db: Database, trusted_key: bytes, witness: dict[str, Any] | None = None,
           retention_days: int = 2191, workers: int = 1, split_min: int = SPLIT_MIN
           ) -> Verified:
    """Verify the whole trail. ``workers`` > 1 checks the events on that many cores when
    the trail has at least ``split_min`` events a worker; the result, and what a tampered
    trail reports, are the same either way."""
    with db.read() as conn:
        split = _read_split(conn, db, workers, split_min) if workers > 1 else None
        if split is None:
            leaves = _read_leaves(conn, db.is_sqlite)
            tree = merkle.LevelNodes(leaves.hashes)
        else:
            leaves, tree = split
        stored_cps = [Checkpoint.from_row(r)
                      for r in conn.execute(sa.select(audit_checkpoints)
                                            .order_by(audit_checkpoints.c.size))]
        unsequenced = conn.execute(sa.select(sa.func.count()).select_from(audit_events)
                                   .where(audit_events.c.leaf_index.is_(None))).scalar_one()
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
