"""Retention: when each record's declared retention runs out, and the job that purges what has
expired — crypto-shredding a subject whose every record has expired, deleting records
otherwise — unless a legal hold covers it.

How a record's clock is counted (the data map's ``retention`` of its collection):

- ``from: <date field>``: from that field's value; while the field is empty (a claim not yet
  closed, a policy without an end date) the clock has not started and the record stays.
- ``from: created`` / ``updated``: from the record's own timestamps.
- ``from: last_policy_or_claim_end``: from the latest ``end_date`` of the subject's policies
  and ``closed_at`` of their claims; while any policy has no end date or any claim is open,
  the clock has not started. A subject with neither counts from the record's creation.
- ``from: consent_withdrawn``: from the withdrawal of the subject's consent to the rule's
  purpose; while consent stands (or was never recorded) the record stays.
- ``when: {field: value}``: the rule applies only to matching records (declined quotes);
  others have no clock of their own and go when their subject's whole record set expires.

A record has expired on and after ``start + period`` (the anniversary day itself included).

A clock counted from a date field never starts before the record's last change: whoever may
write a record but not delete it cannot have it purged by backdating ``end_date``,
``closed_at`` or ``decision_date``. (Records imported with historical dates are therefore kept
a full period from their import.)
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from fiduciary.audit.events import AuditLog
from fiduciary.clock import Clock
from fiduciary.datamap import CollectionSpec, DataMap
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.principal import Principal
from fiduciary.privacy.deadlines import add_months
from fiduciary.privacy.holds import ActiveHolds
from fiduciary.storage import Database
from fiduciary.vault import store
from fiduciary.vault.store import StoredRecord, SubjectStatus

log = logging.getLogger("fiduciary.retention")

_PERIOD = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")
_LIFETIME = ("last_policy_or_claim_end",)


def period_parts(period: str) -> tuple[int, int, int] | None:
    """The years, months and days of an ISO 8601 period (``P7Y``, ``P1Y6M``, ``P30D``), or
    None if ``period`` is not one."""
    m = _PERIOD.match(period)
    if not m:
        return None
    years, months, days = (int(g) if g else 0 for g in m.groups())
    return years, months, days


def add_period(start: date, period: str | None) -> date:
    """``start`` plus an ISO 8601 period of years, months and days; a day past the end of the
    target month falls back to its last day (29 Feb + P1Y is 28 Feb)."""
    if not period:
        return start
    parts = period_parts(period)
    if parts is None:
        raise ValueError(f"not an ISO 8601 period: {period!r}")
    years, months, days = parts
    return add_months(start, 12 * years + months) + timedelta(days=days)


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date() \
                if "T" in value else date.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Expiry:
    """``expires_on`` None: the clock has not started (``running``) or the record has no clock
    of its own and goes with its subject (``with_subject``)."""

    expires_on: date | None
    running: bool = False
    with_subject: bool = False

    def expired(self, as_of: date) -> bool:
        return self.expires_on is not None and self.expires_on <= as_of


class ConsentWithdrawals(Protocol):
    def withdrawn(self, purpose: str, as_of: datetime) -> Iterable[tuple[str, datetime]]: ...


class RetentionRules:
    """Evaluates the data map's retention rules for one subject's records."""

    def __init__(self, datamap: DataMap) -> None:
        self.datamap = datamap

    def consent_purposes(self) -> set[str]:
        return {c.retention.consent_purpose for c in self.datamap.collections.values()
                if c.retention.consent_purpose}

    def expiries(self, rows: list[StoredRecord],
                 withdrawn: dict[str, datetime] | None = None) -> dict[str, Expiry]:
        """record id -> expiry, for all records of ONE subject; ``withdrawn`` maps a consent
        purpose to when the subject withdrew it (if their consent is withdrawn now)."""
        lifetime = self._lifetime_end(rows)
        return {r.id: self._expiry(r, lifetime, withdrawn or {}) for r in rows}

    def _expiry(self, r: StoredRecord, lifetime: tuple[date | None, bool],
                withdrawn: dict[str, datetime]) -> Expiry:
        spec: CollectionSpec | None = self.datamap.collections.get(r.collection)
        if spec is None:
            return Expiry(None, with_subject=True)  # undeclared now: goes with its subject
        rule = spec.retention
        if any(r.clear.get(k) != v for k, v in rule.when.items()):
            return Expiry(None, with_subject=True)
        start: date | None
        if rule.start == "created":
            start = r.created_at.date()
        elif rule.start == "updated":
            start = r.updated_at.date()
        elif rule.start == "last_policy_or_claim_end":
            end, running = lifetime
            if running:
                return Expiry(None, running=True)
            start = end or r.created_at.date()
        elif rule.start == "consent_withdrawn":
            at = withdrawn.get(rule.consent_purpose or "")
            if at is None:
                return Expiry(None, running=True)
            start = at.date()
        else:
            start = _as_date(r.clear.get(rule.start))
            if start is None:
                return Expiry(None, running=True)
            start = max(start, r.updated_at.date())
        return Expiry(add_period(start, rule.period))

    @staticmethod
    def _lifetime_end(rows: list[StoredRecord]) -> tuple[date | None, bool]:
        """(latest end of the subject's policies and claims, whether any is still running)."""
        ends: list[date] = []
        running = False
        for r in rows:
            key = {"policies": "end_date", "claims": "closed_at"}.get(r.collection)
            if key is None:
                continue
            end = _as_date(r.clear.get(key))
            if end is None:
                running = True
            else:
                ends.append(max(end, r.updated_at.date()))
        return (max(ends) if ends else None), running

    def duty(self, r: StoredRecord, expiry: Expiry, as_of: date) -> str | None:
        """Why an erasure must keep this record for now, if a statutory retention duty runs."""
        spec = self.datamap.collections.get(r.collection)
        if spec is None or not spec.retention.statutory or expiry.expired(as_of):
            return None
        until = expiry.expires_on.isoformat() if expiry.expires_on else \
            f"{spec.retention.period} after {spec.retention.start} (not yet started)"
        return f"statutory retention until {until}: {spec.retention.statutory}"

    def describe(self, collection: str) -> str:
        spec = self.datamap.collections.get(collection)
        if spec is None:
            return "collection no longer declared"
        rule = spec.retention
        text = rule.description or (
            f"{rule.period or 'until'} from {rule.start}"
            + (f" when {json.dumps(rule.when, sort_keys=True)}" if rule.when else ""))
        return text


@dataclass
class RetentionItem:
    subject_id: str
    collection: str
    record_id: str
    expired_on: date | None
    rule: str
    action: str  # delete | shred_subject | held
    hold_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "collection": self.collection,
                "record_id": self.record_id,
                "expired_on": self.expired_on.isoformat() if self.expired_on else None,
                "rule": self.rule, "action": self.action, "hold_id": self.hold_id}


@dataclass
class RetentionReport:
    as_of: date
    dry_run: bool
    items: list[RetentionItem] = field(default_factory=list)
    subjects_shredded: int = 0
    records_deleted: int = 0
    erasures_completed: int = 0

    def as_dict(self) -> dict[str, Any]:
        held = sum(1 for i in self.items if i.action == "held")
        return {"as_of": self.as_of.isoformat(), "dry_run": self.dry_run,
                "expired": len(self.items) - held, "held": held,
                "subjects_shredded": self.subjects_shredded,
                "records_deleted": self.records_deleted,
                "erasures_completed": self.erasures_completed,
                "items": [i.as_dict() for i in self.items]}


#: (principal, subject id, reason) -> shreds a whole subject; the Eraser provides it.
Shredder = Callable[[Principal, str, str], Any]
#: (principal, subject id) -> finishes a pending erasure if nothing is kept any more.
Finisher = Callable[[Principal, str], bool]


class RetentionService:
    def __init__(self, db: Database, datamap: DataMap, clock: Clock, audit: AuditLog,
                 consent: ConsentWithdrawals, shred: Shredder, finish: Finisher,
                 sweep: Callable[[], int] | None = None, page_size: int = 500) -> None:
        self.db = db
        self.rules = RetentionRules(datamap)
        self.clock = clock
        self.audit = audit
        self.consent = consent
        self._shred = shred
        self._finish = finish
        self._sweep = sweep
        self.page_size = page_size

    def run(self, principal: Principal, as_of: date | None = None,
            dry_run: bool = False) -> RetentionReport:
        today = self.clock.now().date()
        as_of = as_of or today
        if as_of > today and not dry_run:
            # A purge judged as of a future date would destroy what must still be kept.
            raise InvalidInput("a purge cannot be judged as of a future date",
                               [FieldProblem("as_of", f"on or before {today.isoformat()} "
                                                      "(use --dry-run to look ahead)")])
        report = RetentionReport(as_of=as_of, dry_run=dry_run)
        if self._sweep and not dry_run:
            self._sweep()
        at = datetime.combine(as_of, datetime.max.time()).replace(tzinfo=self.clock.now().tzinfo)
        withdrawn: dict[str, dict[str, datetime]] = {}
        for purpose in self.rules.consent_purposes():
            for sid, when in self.consent.withdrawn(purpose, at):
                withdrawn.setdefault(sid, {})[purpose] = when
        with self.db.read() as conn:
            holds = ActiveHolds.load(conn)
        for subject_id, status, rows in self._subjects():
            self._subject(principal, subject_id, status, rows, withdrawn.get(subject_id, {}),
                          holds, report)
        self.audit.append_committed(self.audit.event(
            principal, "retention.run" if not dry_run else "retention.plan",
            details={k: v for k, v in report.as_dict().items() if k != "items"}))
        return report

    def run_forever(self, principal: Principal, stop: threading.Event,
                    interval_seconds: float) -> None:
        """The schedule ``fiduciary serve`` runs in a background thread."""
        while not stop.wait(interval_seconds):
            try:
                report = self.run(principal)
                log.info("retention run: %s", {k: v for k, v in report.as_dict().items()
                                                if k != "items"})
            except Exception:
                log.exception("retention run failed")

    def _subjects(self) -> Iterator[tuple[str, str, list[StoredRecord]]]:
        """Every subject not yet erased, with its records, a page at a time."""
        after = ""
        while True:
            with self.db.read() as conn:
                page = store.live_subjects(conn, after, self.page_size)
                if not page:
                    return
                by_subject: dict[str, list[StoredRecord]] = {sid: [] for sid, _ in page}
                for r in store.stored_records(conn, *by_subject):
                    by_subject[r.subject_id].append(r)
            for sid, status in page:
                yield sid, status, by_subject[sid]
            after = page[-1][0]

    def _subject(self, principal: Principal, subject_id: str, status: str,
                 rows: list[StoredRecord], withdrawn: dict[str, datetime],
                 holds: ActiveHolds, report: RetentionReport) -> None:
        if not rows:
            if status == SubjectStatus.ERASURE_PENDING and not report.dry_run:
                report.erasures_completed += int(self._finish(principal, subject_id))
            return
        expiries = self.rules.expiries(rows, withdrawn)

        def hold_of(r: StoredRecord) -> str | None:
            hold = holds.covering(subject_id, r.id, r.collection)
            return hold.id if hold else None

        if status == SubjectStatus.ERASURE_PENDING:
            self._pending(principal, subject_id, rows, expiries, hold_of, report)
            return
        own = [r for r in rows if not expiries[r.id].with_subject]
        expired = [r for r in own if expiries[r.id].expired(report.as_of)]
        if not expired:
            return
        whole = len(expired) == len(own)
        held = {r.id: h for r in rows if (h := hold_of(r))}
        if whole and not held:
            for r in rows:
                report.items.append(RetentionItem(
                    subject_id, r.collection, r.id, expiries[r.id].expires_on,
                    self.rules.describe(r.collection), "shred_subject"))
            if not report.dry_run:
                self._shred(principal, subject_id, "retention period ended")
                report.subjects_shredded += 1
            return
        deletable = []
        for r in expired:
            item = RetentionItem(subject_id, r.collection, r.id, expiries[r.id].expires_on,
                                 self.rules.describe(r.collection),
                                 "held" if r.id in held else "delete", held.get(r.id))
            report.items.append(item)
            if r.id not in held:
                deletable.append(r)
        if deletable and not report.dry_run:
            self._delete(principal, subject_id, deletable)
            report.records_deleted += len(deletable)

    def _pending(self, principal: Principal, subject_id: str, rows: list[StoredRecord],
                 expiries: dict[str, Expiry], hold_of: Callable[[StoredRecord], str | None],
                 report: RetentionReport) -> None:
        """An erasure kept these records for a hold or a duty: those whose reason has ended
        go now, and with the last of them the subject's key."""
        deletable = []
        for r in rows:
            if self.rules.duty(r, expiries[r.id], report.as_of) is not None:
                continue  # the statutory duty still runs
            hold = hold_of(r)
            report.items.append(RetentionItem(
                subject_id, r.collection, r.id, expiries[r.id].expires_on,
                "kept by an erasure until its duty or hold ends",
                "held" if hold else "delete", hold))
            if hold is None:
                deletable.append(r)
        if not deletable or report.dry_run:
            return
        self._delete(principal, subject_id, deletable)
        report.records_deleted += len(deletable)
        if len(deletable) == len(rows):
            report.erasures_completed += int(self._finish(principal, subject_id))

    def _delete(self, principal: Principal, subject_id: str,
                rows: list[StoredRecord]) -> None:
        with self.db.write() as conn:
            # A hold placed since the run began still wins.
            held = ActiveHolds.of_subject(conn, subject_id, rows).covered(subject_id, rows)
            ids = [r.id for r in rows if r.id not in held]
            if not ids:
                return
            store.delete_records(conn, ids)
            self.audit.append(conn, self.audit.event(
                principal, "retention.purge", record_ids=ids, subject_ids=[subject_id],
                purpose="legal_obligation",
                details={"records": len(ids),
                         "collections": sorted({r.collection for r in rows if r.id in ids})}))


