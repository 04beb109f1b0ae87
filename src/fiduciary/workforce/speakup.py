"""The speak-up channel: a confidential internal reporting channel (EU Whistleblower Directive
2019/1937, art. 8 and 9).

::

    reporter (no login)                                ethics officer (speakup:manage)
    POST /v1/speakup/reports ──► case: received ──► acknowledge (due 7 days from receipt)
        ◄── receipt, shown once                        feedback    (due 3 months from receipt)
    GET  /v1/speakup/thread        ◄── messages ────── close with an outcome
    POST /v1/speakup/thread/messages ──► message

What the channel guarantees (art. 9(1)(a), 16: confidentiality of the reporter):

- The receipt is 20 random digits; only ``Argon2id(receipt, salt = HMAC(keyring key,
  receipt))`` is stored. The salt is keyed, so the hash is an index (a case is found without a
  scan) and nobody without the keyring can even start guessing; every guess costs one Argon2id.
  A wrong receipt, a malformed one and a missing one all cost the same work and get the same
  answer.
- Report, category, identity, messages and outcome are sealed (AES-256-GCM under a
  keyring-derived key, associated data binding case and part): a DBA or an administrator
  reading the database, a backup or the audit trail sees no content. Only ``speakup:manage``
  (and the operator holding the keyring, through the CLI) reads them.
- No address, user agent, session or exact time: intake and messages are dated by UTC day;
  the deadlines are counted from that day; no audit event is written at the moment of an
  intake or a reporter's message (its time and its place in the trail would date it): they
  are audited in a batch once their day is over.
- Intake and wrong receipts are rate-limited per client address without storing it: an
  in-memory count keyed by HMAC(address) under a random key replaced every hour.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from argon2.low_level import Type, hash_secret_raw
from sqlalchemy.engine import Connection

from fiduciary.audit.events import (
    AuditEvent,
    AuditLog,
    RequestContext,
    audit_actor,
    request_context,
)
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.crypto.aead import associated_data, open_sealed, seal
from fiduciary.crypto.keyring import Keyring
from fiduciary.errors import (
    NotFound,
    RateLimited,
    Reason,
    Unauthenticated,
    WorkflowConflict,
)
from fiduciary.ids import is_id, new_id
from fiduciary.monitoring.alerts import free_text
from fiduciary.principal import SYSTEM, Permission, Principal, require_permission
from fiduciary.privacy.deadlines import add_months
from fiduciary.storage import Database
from fiduciary.storage.schema import speakup_alerts, speakup_cases, speakup_messages

#: Art. 9(1)(b): acknowledge within 7 days; 9(1)(f): feedback within 3 months.
ACKNOWLEDGE_DAYS = 7
FEEDBACK_MONTHS = 3
RECEIPT_DIGITS = 20
MAX_REPORT = 20_000
MAX_MESSAGE = 10_000
MAX_CATEGORY = 64
MAX_IDENTITY = 200
_LABEL = b"fiduciary-speakup/1"
#: What the address limiter counts.
REPORTS, RECEIPT_FAILURES = "reports", "receipt_failures"


class CaseStatus(StrEnum):
    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class Author(StrEnum):
    REPORTER = "reporter"
    HANDLER = "handler"


class Overdue(StrEnum):
    """The overdue lists: open cases past a deadline."""

    ACKNOWLEDGE = "acknowledge"
    FEEDBACK = "feedback"


def day_of(moment: datetime) -> datetime:
    """The UTC day a moment falls on (its midnight): the only time the channel keeps of a
    reporter's action."""
    return midnight(moment.astimezone(UTC).date())


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# -- the receipt -------------------------------------------------------------------------------
class Receipts:
    """New receipts, and the index a receipt is found by: Argon2id (``time_cost`` passes over
    ``memory_kib``, one lane, 32 bytes) of the 20 digits, salted with 16 bytes of
    HMAC-SHA256(keyring-derived key, digits). At most ``concurrency`` hashes run at once."""

    def __init__(self, keyring: Keyring, time_cost: int, memory_kib: int,
                 concurrency: int = 4) -> None:
        self._salt_key = keyring.derive_key("speakup-receipt-salt")
        self.spec = f"argon2id$t={time_cost}$m={memory_kib}$p=1"
        self._gate = threading.BoundedSemaphore(concurrency)

    @staticmethod
    def new() -> str:
        """20 random digits in groups of four (about 66 bits), for the reporter to keep."""
        digits = f"{secrets.randbelow(10 ** RECEIPT_DIGITS):0{RECEIPT_DIGITS}d}"
        return "-".join(digits[i:i + 4] for i in range(0, RECEIPT_DIGITS, 4))

    @staticmethod
    def digits(receipt: str | None) -> str | None:
        """The receipt's 20 digits (spaces and dashes ignored), or None if it has no such."""
        if receipt is None or len(receipt) > 64:
            return None
        digits = "".join(c for c in receipt if c not in " -")
        if len(digits) != RECEIPT_DIGITS or not (digits.isascii() and digits.isdigit()):
            return None
        return digits

    def index(self, digits: str, spec: str | None = None) -> str:
        t, m = _parse_spec(spec or self.spec)
        salt = hmac.digest(self._salt_key, digits.encode(), "sha256")[:16]
        with self._gate:
            raw = hash_secret_raw(digits.encode(), salt, time_cost=t, memory_cost=m,
                                  parallelism=1, hash_len=32, type=Type.ID)
        return raw.hex()


def _parse_spec(spec: str) -> tuple[int, int]:
    parts = dict(p.split("=", 1) for p in spec.split("$")[1:])
    return int(parts["t"]), int(parts["m"])


# -- the rate limit ----------------------------------------------------------------------------
class AddressLimiter:
    """At most ``limits[kind]`` hits per client address per period (an hour), in memory.
    The address is kept only as HMAC(address) under a random key that is replaced, with
    every count, when the period ends: nothing maps a count back to an address, even in a
    memory dump after the hour."""

    def __init__(self, limits: dict[str, int], period_seconds: float = 3600.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._period = period_seconds
        self._now = now
        self._lock = threading.Lock()
        self._since = -period_seconds
        self._key = b""
        self._counts: dict[tuple[str, str], int] = {}

    def _slot(self, kind: str, address: str | None) -> tuple[tuple[str, str], float]:
        now = self._now()
        if now - self._since >= self._period:
            self._since = now
            self._key = secrets.token_bytes(32)
            self._counts = {}
        key = hmac.digest(self._key, (address or "unknown").encode(), "sha256").hex()
        return (kind, key), self._since + self._period - now

    def check(self, kind: str, address: str | None, count: bool = True) -> None:
        """:class:`RateLimited` when the address has used its hits of ``kind`` this period;
        otherwise counts this one (unless ``count`` is false: see :meth:`count`)."""
        with self._lock:
            slot, wait = self._slot(kind, address)
            used = self._counts.get(slot, 0)
            if used >= self._limits[kind]:
                raise RateLimited("too many attempts from this address; try again later",
                                  wait)
            if count:
                self._counts[slot] = used + 1

    def count(self, kind: str, address: str | None) -> None:
        with self._lock:
            slot, _ = self._slot(kind, address)
            self._counts[slot] = self._counts.get(slot, 0) + 1


# -- sealing -----------------------------------------------------------------------------------
class CaseSealer:
    """Seals a case's free text under a keyring-derived key of its own, bound to the case and
    the part (``report``, ``message:<id>`` …): a ciphertext moved to another case or part
    fails to open."""

    def __init__(self, keyring: Keyring) -> None:
        self._key = keyring.derive_key("speakup-cases")

    def seal(self, text: str, case_id: str, part: str) -> bytes:
        return seal(self._key, text.encode(), associated_data(_LABEL, case_id, part))

    def open(self, sealed: bytes, case_id: str, part: str) -> str:
        return open_sealed(self._key, sealed, associated_data(_LABEL, case_id, part)).decode()

    def open_or_none(self, sealed: bytes | None, case_id: str, part: str) -> str | None:
        return None if sealed is None else self.open(sealed, case_id, part)


@dataclass(frozen=True)
class Intake:
    receipt: str
    acknowledge_by: datetime
    feedback_by: datetime


_NO_RECEIPT = Unauthenticated("receipt not recognised")


def _optional_text(name: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    return free_text(name, value, limit=limit)


class SpeakUpService:
    """The channel's cases: intake and threads for reporters (who hold a receipt, nothing
    else), case handling for ``speakup:manage``."""

    def __init__(self, db: Database, clock: Clock, audit: AuditLog, sealer: CaseSealer,
                 receipts: Receipts, limiter: AddressLimiter) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.sealer = sealer
        self.receipts = receipts
        self.limiter = limiter

    # -- the reporter ------------------------------------------------------------------------
    def submit(self, text: Any, category: Any = None, identify_as: Any = None, *,
               address: str | None) -> Intake:
        """A new case; the receipt is returned once and stored only as its index. ``address``
        is counted for the rate limit and forgotten."""
        self.limiter.check(REPORTS, address)
        report = free_text("text", text, limit=MAX_REPORT)
        assert report is not None
        category = _optional_text("category", category, MAX_CATEGORY)
        identity = _optional_text("identify_as", identify_as, MAX_IDENTITY)
        receipt = self.receipts.new()
        digits = self.receipts.digits(receipt)
        assert digits is not None
        index = self.receipts.index(digits)  # outside any database lock
        case_id = new_id()
        received = day_of(self.clock.now())
        acknowledge_by = received + timedelta(days=ACKNOWLEDGE_DAYS)
        # Calendar months, clamped to a shorter month's end: 31 January → 30 April.
        feedback_by = midnight(add_months(received.date(), FEEDBACK_MONTHS))
        seal_ = self.sealer.seal
        with self.db.write() as conn:
            conn.execute(speakup_cases.insert(), [{
                "id": case_id, "receipt_index": index, "kdf": self.receipts.spec,
                "status": CaseStatus.RECEIVED, "received_on": received,
                "acknowledge_by": acknowledge_by, "feedback_by": feedback_by,
                "acknowledged_at": None, "feedback_at": None, "closed_at": None,
                "report_sealed": seal_(report, case_id, "report"),
                "category_sealed": seal_(category, case_id, "category") if category else None,
                "identity_sealed": seal_(identity, case_id, "identity") if identity else None,
                "outcome_sealed": None, "audited": False}])
        return Intake(receipt, acknowledge_by, feedback_by)

    def _find(self, receipt: str | None, address: str | None) -> Any:
        """The case of a receipt, after the same KDF work whatever the receipt is; one
        :class:`Unauthenticated` for every failure."""
        # Checked before the work, counted on failure: over the limit, even the right receipt
        # is refused, so guessing stops there.
        self.limiter.check(RECEIPT_FAILURES, address, count=False)
        digits = self.receipts.digits(receipt)
        with self.db.read() as conn:
            specs = {r[0] for r in conn.execute(sa.select(speakup_cases.c.kdf).distinct())}
        found = None
        for spec in sorted(specs | {self.receipts.spec}):
            index = self.receipts.index(digits or "0" * RECEIPT_DIGITS, spec)
            with self.db.read() as conn:
                row = conn.execute(sa.select(speakup_cases).where(
                    speakup_cases.c.receipt_index == index,
                    speakup_cases.c.kdf == spec)).first()
            if row is not None and digits is not None:
                found = row
        if found is None:
            self.limiter.count(RECEIPT_FAILURES, address)
            raise _NO_RECEIPT
        return found

    def thread(self, receipt: str | None, *, address: str | None) -> dict[str, Any]:
        """What the reporter sees: the report, the case's status and deadlines, and every
        message of the thread. Not audited: a read changes nothing, and its moment would
        date the reporter."""
        case = self._find(receipt, address)
        with self.db.read() as conn:
            messages = self._messages(conn, case.id)
        return {"status": case.status, "received_on": case.received_on.date().isoformat(),
                "acknowledged": case.acknowledged_at is not None,
                "acknowledge_by": iso(case.acknowledge_by), "feedback_by": iso(case.feedback_by),
                "report": self.sealer.open(case.report_sealed, case.id, "report"),
                "category": self.sealer.open_or_none(case.category_sealed, case.id,
                                                     "category"),
                "messages": messages}

    def add_message(self, receipt: str | None, text: Any, *, address: str | None) -> None:
        """A reporter's message to the handlers (dated by day, audited in a later batch)."""
        body = free_text("text", text, limit=MAX_MESSAGE)
        assert body is not None
        case = self._find(receipt, address)
        if case.status == CaseStatus.CLOSED:
            raise WorkflowConflict("the case is closed", reason=Reason.REQUEST_CLOSED)
        with self.db.write() as conn:
            self._insert_message(conn, case.id, Author.REPORTER, body,
                                 day_of(self.clock.now()), audited=False)

    def _insert_message(self, conn: Connection, case_id: str, author: Author, text: str,
                        sent_on: datetime, audited: bool) -> str:
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(speakup_messages.c.seq), 0))
                           .where(speakup_messages.c.case_id == case_id)).scalar_one()
        message_id = new_id()
        conn.execute(speakup_messages.insert(), [{
            "id": message_id, "case_id": case_id, "seq": int(seq) + 1, "author": author,
            "text_sealed": self.sealer.seal(text, case_id, f"message:{message_id}"),
            "sent_on": sent_on, "audited": audited}])
        return message_id

    def _messages(self, conn: Connection, case_id: str) -> list[dict[str, Any]]:
        rows = conn.execute(sa.select(speakup_messages).where(
            speakup_messages.c.case_id == case_id).order_by(speakup_messages.c.seq)).all()
        return [{"from": r.author, "sent_on": r.sent_on.date().isoformat(),
                 "text": self.sealer.open(r.text_sealed, case_id, f"message:{r.id}")}
                for r in rows]

    # -- the ethics officer ------------------------------------------------------------------
    def _event(self, principal: Principal, action: str, **details: Any) -> AuditEvent:
        """A case-handling event: the handler, the case id, never content or the reporter."""
        return self.audit.event(audit_actor(principal), action, details=details)

    def _summary(self, row: Any, now: datetime, messages: int) -> dict[str, Any]:
        is_open = row.status != CaseStatus.CLOSED
        return {"id": row.id, "status": row.status,
                "received_on": row.received_on.date().isoformat(),
                "acknowledge_by": iso(row.acknowledge_by), "feedback_by": iso(row.feedback_by),
                "acknowledged_at": iso_or_none(row.acknowledged_at),
                "feedback_at": iso_or_none(row.feedback_at),
                "closed_at": iso_or_none(row.closed_at),
                "category": self.sealer.open_or_none(row.category_sealed, row.id, "category"),
                "identified": row.identity_sealed is not None, "messages": messages,
                "overdue_acknowledge": is_open and row.acknowledged_at is None
                and now > row.acknowledge_by,
                "overdue_feedback": is_open and row.feedback_at is None
                and now > row.feedback_by}

    def cases(self, principal: Principal, overdue: Overdue | None = None
             ) -> list[dict[str, Any]]:
        """Every case, newest first, with its overdue flags; ``overdue`` keeps the open cases
        past that deadline."""
        require_permission(principal, Permission.SPEAKUP_MANAGE, scope=None)
        self.flush_audit()
        now = self.clock.now()
        with self.db.read() as conn:
            counts = {r[0]: int(r[1]) for r in conn.execute(
                sa.select(speakup_messages.c.case_id, sa.func.count())
                .group_by(speakup_messages.c.case_id))}
            rows = conn.execute(sa.select(speakup_cases).order_by(
                speakup_cases.c.received_on.desc(), speakup_cases.c.id)).all()
        items = [self._summary(r, now, int(counts.get(r.id, 0))) for r in rows]
        if overdue is not None:
            items = [i for i in items if i[f"overdue_{overdue}"]]
        self.audit.append_committed(self._event(principal, "speakup.list", overdue=overdue,
                                                count=len(items)))
        return items

    def show(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """A case in full: report, category, identity (if given), thread and outcome."""
        require_permission(principal, Permission.SPEAKUP_MANAGE, scope=None)
        self.flush_audit()
        with self.db.read() as conn:
            row = self._case(conn, case_id)
            messages = self._messages(conn, case_id)
        doc = {**self._summary(row, self.clock.now(), len(messages)),
               "report": self.sealer.open(row.report_sealed, row.id, "report"),
               "identify_as": self.sealer.open_or_none(row.identity_sealed, row.id, "identity"),
               "outcome": self.sealer.open_or_none(row.outcome_sealed, row.id, "outcome"),
               "thread": messages}
        self.audit.append_committed(self._event(principal, "speakup.read", case_id=case_id))
        return doc

    @staticmethod
    def _case(conn: Connection, case_id: str) -> Any:
        row = None
        if is_id(case_id):
            row = conn.execute(sa.select(speakup_cases).where(
                speakup_cases.c.id == case_id)).first()
        if row is None:
            raise NotFound(f"speak-up case {case_id} not found", code="case_not_found")
        return row

    def _open_case(self, conn: Connection, case_id: str) -> Any:
        row = self._case(conn, case_id)
        if row.status == CaseStatus.CLOSED:
            raise WorkflowConflict("the case is closed", reason=Reason.REQUEST_CLOSED)
        return row

    def acknowledge(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """Art. 9(1)(b): the reporter sees the case acknowledged."""
        require_permission(principal, Permission.SPEAKUP_MANAGE, scope=None)
        self.flush_audit()
        now = self.clock.now()
        with self.db.write() as conn:
            row = self._open_case(conn, case_id)
            if row.acknowledged_at is not None:
                raise WorkflowConflict("the case is already acknowledged",
                                       reason=Reason.ALREADY_ACKNOWLEDGED)
            conn.execute(speakup_cases.update().where(speakup_cases.c.id == case_id).values(
                status=CaseStatus.ACKNOWLEDGED, acknowledged_at=now))
            self.audit.append(conn, self._event(principal, "speakup.acknowledge",
                                                case_id=case_id, late=now > row.acknowledge_by))
        return self.show(principal, case_id)

    def feedback(self, principal: Principal, case_id: str, text: Any) -> dict[str, Any]:
        """Art. 9(1)(f): a message the reporter reads; the first one meets the feedback
        deadline (and acknowledges the case if nobody had)."""
        require_permission(principal, Permission.SPEAKUP_MANAGE, scope=None)
        body = free_text("text", text, limit=MAX_MESSAGE)
        assert body is not None
        self.flush_audit()
        now = self.clock.now()
        with self.db.write() as conn:
            row = self._open_case(conn, case_id)
            message_id = self._insert_message(conn, case_id, Author.HANDLER, body, day_of(now),
                                              audited=True)
            changes: dict[str, Any] = {}
            if row.feedback_at is None:
                changes["feedback_at"] = now
            if row.acknowledged_at is None:
                changes.update(acknowledged_at=now, status=CaseStatus.ACKNOWLEDGED)
            if changes:
                conn.execute(speakup_cases.update().where(speakup_cases.c.id == case_id)
                             .values(**changes))
            self.audit.append(conn, self._event(
                principal, "speakup.feedback", case_id=case_id, message_id=message_id,
                first=row.feedback_at is None,
                late=row.feedback_at is None and now > row.feedback_by))
        return self.show(principal, case_id)

    def close(self, principal: Principal, case_id: str, outcome: Any) -> dict[str, Any]:
        """Close the case with its outcome (sealed; for the handlers' file)."""
        require_permission(principal, Permission.SPEAKUP_MANAGE, scope=None)
        text = free_text("outcome", outcome, limit=MAX_MESSAGE)
        assert text is not None
        self.flush_audit()
        with self.db.write() as conn:
            self._open_case(conn, case_id)
            conn.execute(speakup_cases.update().where(speakup_cases.c.id == case_id).values(
                status=CaseStatus.CLOSED, closed_at=self.clock.now(),
                outcome_sealed=self.sealer.seal(text, case_id, "outcome")))
            self.audit.append(conn, self._event(principal, "speakup.close", case_id=case_id))
        return self.show(principal, case_id)

    def alerts(self, principal: Principal) -> list[dict[str, Any]]:
        """The retaliation watch's queue, newest first (``speakup_watch``)."""
        require_permission(principal, Permission.SPEAKUP_MANAGE, scope=None)
        with self.db.read() as conn:
            rows = conn.execute(sa.select(speakup_alerts).order_by(
                speakup_alerts.c.raised_on.desc(), speakup_alerts.c.id)).all()
        items = [{"id": r.id, "case_id": r.case_id, "raised_on": r.raised_on.date().isoformat(),
                  **json.loads(self.sealer.open(r.details_sealed, r.case_id, f"alert:{r.id}"))}
                 for r in rows]
        self.audit.append_committed(self._event(principal, "speakup.alerts_read",
                                                count=len(items)))
        return items

    # -- the deferred audit ------------------------------------------------------------------
    def flush_audit(self) -> int:
        """Audit the intakes and reporters' messages of days that are over, in one event:
        the trail learns that they happened and on which day, not when in the day nor next
        to which other event. Returns how many it covered."""
        today = day_of(self.clock.now())
        cases_due = sa.select(speakup_cases.c.id, speakup_cases.c.received_on).where(
            speakup_cases.c.audited.is_(False), speakup_cases.c.received_on < today
        ).order_by(speakup_cases.c.id)
        messages_due = sa.select(speakup_messages.c.id, speakup_messages.c.case_id).where(
            speakup_messages.c.audited.is_(False), speakup_messages.c.sent_on < today)
        with self.db.read() as conn:  # every handler action asks: no write lock for nothing
            if (conn.execute(cases_due.limit(1)).first() is None
                    and conn.execute(messages_due.limit(1)).first() is None):
                return 0
        with self.db.write() as conn:
            # Locked (PostgreSQL): two processes flushing at once audit each row once.
            cases = conn.execute(cases_due.with_for_update()).all()
            messages = conn.execute(messages_due.with_for_update()).all()
            if not cases and not messages:  # another process audited them meanwhile
                return 0
            by_case: dict[str, int] = {}
            for m in messages:
                by_case[m.case_id] = by_case.get(m.case_id, 0) + 1
            conn.execute(speakup_cases.update().where(
                speakup_cases.c.id.in_([c.id for c in cases])).values(audited=True))
            conn.execute(speakup_messages.update().where(
                speakup_messages.c.id.in_([m.id for m in messages])).values(audited=True))
            # The system's event, whoever's action flushed it: no handler's address, request
            # id or CLI run stamped on the intakes.
            token = request_context.set(RequestContext())
            try:
                event = self.audit.event(SYSTEM, "speakup.received", details={
                    "cases": [{"case_id": c.id,
                               "received_on": c.received_on.date().isoformat()}
                              for c in cases],
                    "reporter_messages": dict(sorted(by_case.items()))})
            finally:
                request_context.reset(token)
            self.audit.append(conn, event)
        return len(cases) + len(messages)


def keyed_digest(key: bytes, *parts: str) -> str:
    """A keyed digest of ``parts`` (unambiguous encoding), for dedup keys that must not be
    recomputable from the database alone."""
    return hmac.new(key, associated_data(_LABEL, *parts), hashlib.sha256).hexdigest()
