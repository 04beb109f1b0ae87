"""No silent rollback: every current record row against the latest write event of the audit trail.

Associated data binds each field to the record's write version, so a field copied back from an
earlier write fails to open (409). A whole row restored to an earlier write opens fine; what
gives it away is the trail: every write event (``record.create``, ``record.update``,
``records.import``) carries, per record, the write version and a keyed digest of the row as
stored (``details.row_digests``, :meth:`RecordCodec.row_digest`), and deletions
(``record.delete``, ``retention.purge``, ``subject.erase``) name the records that went.
:func:`check_records` reads the trail and the records in one snapshot and names every record
that differs from what its latest event says:

``differs``
    the row is not the one its latest write stored: restored to an earlier write (its
    ``version`` is below ``expected_version``), or edited outside Fiduciary;
``deleted``
    a row the trail says was deleted exists again;
``missing``
    a row the trail says exists is gone (deleted outside Fiduciary);
``unrecorded``
    a row no write event accounts for (inserted outside Fiduciary);
``version_regressed``
    the latest write event of a record names an earlier version than one before it (a
    replayed or forged event).

Rows whose latest write predates row digests (version 0), or whose events were pruned after
retention, cannot be checked: they are counted as ``unattested`` until their next write.
The digests are keyed (keyring), so the check runs where the keyring is: ``fiduciary audit
verify --records`` and the server's schedule (:func:`run_forever`). Never a field value: ids,
collections, versions and problems only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.errors import Reason
from fiduciary.principal import SYSTEM
from fiduciary.storage import Database
from fiduciary.storage.schema import audit_events, erasures, records, subjects
from fiduciary.vault.service import VaultService
from fiduciary.vault.store import SubjectStatus

log = logging.getLogger("fiduciary.integrity")

#: Events that store rows, each with ``details.row_digests`` {record id: {version, hmac}}.
WRITE_ACTIONS = ("record.create", "record.update", "records.import")
#: Events that delete the records they name (a partial erasure: those its certificate erased).
DELETE_ACTIONS = ("record.delete", "retention.purge", "subject.erase")
CHECK_ACTION = "records.check"

_PAGE = 1000
#: Most findings one scheduled run's audit event names (the log and the CLI name them all).
_EVENT_FINDINGS = 1000


@dataclass(frozen=True)
class RecordFinding:
    record_id: str
    collection: str | None
    problem: str
    #: The row's write version, and the one its latest write event recorded (where known).
    version: int | None = None
    expected_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "collection": self.collection,
                "problem": self.problem, "version": self.version,
                "expected_version": self.expected_version}


@dataclass
class RecordsReport:
    #: Rows compared with a digest of their latest write.
    checked: int = 0
    #: Rows that cannot be checked: written before row digests, or their events pruned.
    unattested: int = 0
    findings: list[RecordFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.ok, "checked": self.checked, "unattested": self.unattested,
                "findings": [f.as_dict() for f in self.findings]}


@dataclass
class _Expected:
    """What the latest event says of one record."""

    present: bool
    collection: str | None
    #: The event's subjects (shared by the records of one import event).
    subjects: list[str]
    version: int | None = None
    hmac: str | None = None


@contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """One consistent view of trail and records: a write and its event commit together, so
    within a snapshot a row and its latest event always agree unless someone tampered."""
    with db.engine.connect() as conn:
        if not db.is_sqlite:
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():  # SQLite: a deferred read transaction is a snapshot (WAL)
            yield conn


def check_records(vault: VaultService) -> RecordsReport:
    """Compare every record row with its latest write event; see the module documentation."""
    report = RecordsReport()
    with _snapshot(vault.db) as conn:
        expected, top, pruned = _expectations(conn)
        for row in _rows(conn):
            _compare(vault, report, row, expected.pop(row.id, None), top.get(row.id, 0),
                     pruned)
        gone = {rid: e for rid, e in expected.items() if e.present}
        if gone:
            erased = _erased(conn, {s for e in gone.values() for s in e.subjects})
            for rid, e in sorted(gone.items()):
                if not erased.intersection(e.subjects):
                    report.findings.append(RecordFinding(rid, e.collection, "missing",
                                                         None, e.version))
    report.findings.sort(key=lambda f: (f.collection or "", f.record_id))
    return report


def _compare(vault: VaultService, report: RecordsReport, row: Any, e: _Expected | None,
             top: int, pruned: bool) -> None:
    def finding(problem: str) -> None:
        report.findings.append(RecordFinding(row.id, row.collection, problem, row.version,
                                             e.version if e else None))

    if e is None:
        if pruned:
            report.unattested += 1  # its events may have gone after retention
        else:
            finding("unrecorded")
        return
    if not e.present:
        finding("deleted")
        return
    if e.hmac is None or e.version is None:
        if row.version == 0:
            report.unattested += 1  # written before row digests; attested from its next write
        else:
            finding("differs")
        return
    report.checked += 1
    if e.version < top:
        finding("version_regressed")
        return
    digest = vault.codec.row_digest(row.id, row.subject_id, row.collection, row.version,
                                    row.clear, row.sealed, row.created_at, row.updated_at)
    if row.version != e.version or digest != e.hmac:
        finding("differs")


def _expectations(conn: Connection) -> tuple[dict[str, _Expected], dict[str, int], bool]:
    """Per record, what its latest write or delete event says; the highest write version any
    event recorded for it; and whether events were pruned."""
    expected: dict[str, _Expected] = {}
    top: dict[str, int] = {}
    pruned = False
    after = -1
    while True:
        page = conn.execute(
            sa.select(audit_events.c.seq, audit_events.c.action, audit_events.c.event)
            .where(audit_events.c.action.in_(WRITE_ACTIONS + DELETE_ACTIONS),
                   audit_events.c.seq > after)
            .order_by(audit_events.c.seq).limit(_PAGE)).all()
        for seq, action, text in page:
            after = seq
            if text is None:
                pruned = True
                continue
            event = json.loads(text)
            if event.get("decision") == "deny":
                continue  # a refused write stored nothing
            ids: list[str] = event.get("record_ids") or []
            subject_ids: list[str] = event.get("subject_ids") or []
            collection = event.get("collection")
            details = event.get("details") or {}
            if action in WRITE_ACTIONS:
                digests = details.get("row_digests") or {}
                for rid in ids:
                    entry = digests.get(rid)
                    e = _Expected(True, collection, subject_ids)
                    if isinstance(entry, dict):
                        e.version, e.hmac = _int(entry.get("version")), entry.get("hmac")
                        if e.version is not None:
                            top[rid] = max(top.get(rid, 0), e.version)
                    expected[rid] = e
            else:
                for rid in _deleted(conn, action, event, ids):
                    expected[rid] = _Expected(False, collection, subject_ids)
        if len(page) < _PAGE:
            return expected, top, pruned


def _deleted(conn: Connection, action: str, event: dict[str, Any],
             ids: list[str]) -> list[str]:
    """The records a delete event removed. A partial erasure names the records it kept too:
    its certificate says which went, and must agree with the counts the event recorded (the
    certificate is not in the trail; the counts are)."""
    if action != "subject.erase" or event.get("decision") != "partial":
        return ids
    details = event.get("details") or {}
    certificate = conn.execute(sa.select(erasures.c.certificate).where(
        erasures.c.id == str(details.get("erasure_id")))).scalar()
    try:
        erased = list(json.loads(str(certificate))["erased"]["record_ids"])
        consistent = (set(erased) <= set(ids) and len(set(erased)) == int(details["erased"])
                      and len(ids) == int(details["erased"]) + int(details["kept"]))
    except (TypeError, ValueError, KeyError):
        consistent = False
    # A certificate that does not match its event: every record it names counts as erased,
    # so a kept one shows up (as ``deleted``) for someone to look at.
    return erased if consistent else ids


def _rows(conn: Connection) -> Iterator[Any]:
    after = ""
    while True:
        page = conn.execute(
            sa.select(records.c.id, records.c.subject_id, records.c.collection,
                      records.c.version, records.c.clear, records.c.sealed,
                      records.c.created_at, records.c.updated_at)
            .where(records.c.id > after).order_by(records.c.id).limit(_PAGE)).all()
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].id


def _erased(conn: Connection, subject_ids: set[str]) -> set[str]:
    ids = sorted(subject_ids)
    out: set[str] = set()
    for i in range(0, len(ids), 500):
        out.update(conn.execute(sa.select(subjects.c.id).where(
            subjects.c.id.in_(ids[i:i + 500]),
            subjects.c.status == SubjectStatus.ERASED)).scalars())
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_checked(vault: VaultService) -> RecordsReport:
    """One scheduled run: findings go to the ``fiduciary.integrity`` log and into the trail."""
    report = check_records(vault)
    for f in report.findings:
        log.error("record rollback check: collection=%s record=%s problem=%s version=%s "
                  "expected_version=%s", f.collection, f.record_id, f.problem, f.version,
                  f.expected_version)
    audit = vault.audit
    shown = report.findings[:_EVENT_FINDINGS]
    audit.append_committed(audit.event(
        SYSTEM, CHECK_ACTION, record_ids=[f.record_id for f in shown],
        decision="allow" if report.ok else "deny",
        reason=None if report.ok else Reason.INTEGRITY_ERROR,
        details={"checked": report.checked, "unattested": report.unattested,
                 "findings": len(report.findings),
                 "problems": [{"record_id": f.record_id, "problem": f.problem}
                              for f in shown]}))
    return report


def run_forever(vault: VaultService, stop: threading.Event, interval_seconds: float) -> None:
    """The schedule ``fiduciary serve`` runs in a background thread (first run one interval
    after the start)."""
    while not stop.wait(interval_seconds):
        try:
            report = run_checked(vault)
            logging.getLogger("fiduciary.vault").info(
                "record rollback check: %d checked, %d unattested, %d findings",
                report.checked, report.unattested, len(report.findings))
        except Exception:
            log.exception("record rollback check failed")
