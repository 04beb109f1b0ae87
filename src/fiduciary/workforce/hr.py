"""Joiners, movers and leavers from the HR system's feed, and dormant accounts (NYDFS
500.7(a)(3)-(5): access limited to what the job needs, reviewed, and removed promptly at
termination; HIPAA 164.308(a)(3)(ii)(C): termination procedures).

::

    fiduciary users sync-hr FILE.csv     employee_id, username, status, role, manager, leave_date
        each row, on its own ─┬─ bad (unknown user, status, date, manager…) → reported with
        │                     │   every field and reason, nothing of it applied
        │                     ├─ leaver (status leaver, or leave_date ≤ today) → disabled at
        │                     │   once: sessions end, the API keys they hold are revoked
        │                     │   (never held back by another column's error)
        │                     ├─ mover (HR role not among the account's roles) → flagged only
        │                     └─ employee id (when unset) and manager recorded
        └─ the time of the last sync is kept (system_state ``hr_sync``)
    scheduler, daily                     accounts unused ``dormant_disable_days`` (last login,
                                         or creation if never) are disabled, audited
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.apikeys import ApiKeyService
from fiduciary.access.users import EMPLOYEE_ID, User, UserService
from fiduciary.audit.events import AuditLog, audit_actor
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.principal import Principal
from fiduciary.storage import Database
from fiduciary.storage.schema import system_state, users

log = logging.getLogger("fiduciary.workforce")

COLUMNS = ("employee_id", "username", "status", "role", "manager", "leave_date")
REQUIRED_COLUMNS = ("username", "status")
#: ``leave``: on leave (no change); ``leaver`` (or ``terminated``): disabled at once.
STATUSES = ("active", "leave", "leaver", "terminated")
LEAVER_STATUSES = ("leaver", "terminated")
LAST_SYNC_KEY = "hr_sync"
#: Largest HR file read (bytes).
MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass
class HrReport:
    """What a sync found and changed (``dry_run``: what it would change)."""

    dry_run: bool
    rows: int = 0
    applied: int = 0
    rejected: int = 0
    disabled: list[str] = field(default_factory=list)
    keys_revoked: list[str] = field(default_factory=list)
    managers_set: list[dict[str, str | None]] = field(default_factory=list)
    employee_ids_set: list[str] = field(default_factory=list)
    movers: list[dict[str, Any]] = field(default_factory=list)
    leaving: list[dict[str, str]] = field(default_factory=list)
    #: Active accounts the feed does not name (orphans to look at).
    not_in_feed: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    synced_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DormantAccount:
    username: str
    last_used_at: datetime
    idle_days: int

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "last_used_at": iso(self.last_used_at),
                "idle_days": self.idle_days}


@dataclass(frozen=True)
class _Row:
    line: int
    user: User | None
    problems: list[FieldProblem]
    leaver: bool
    leave_date: date | None
    employee_id: str | None
    manager: str | None
    role: str


class HrSync:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, users: UserService,
                 api_keys: ApiKeyService, dormant_days: int = 90) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.users = users
        self.api_keys = api_keys
        self.dormant_days = dormant_days

    # -- the HR feed ---------------------------------------------------------------------------
    def sync_file(self, path: Path, by: Principal | None = None,
                  dry_run: bool = False) -> HrReport:
        """Read an HR CSV file (header line first) and apply it row by row."""
        try:
            raw = path.read_bytes()[:MAX_FILE_BYTES + 1]
            text = raw.decode("utf-8-sig")
        except (OSError, UnicodeDecodeError):
            raise InvalidInput.from_problems(
                [FieldProblem("file", "not a readable UTF-8 CSV file")], "HR file") from None
        if len(raw) > MAX_FILE_BYTES:
            raise InvalidInput.from_problems(
                [FieldProblem("file", f"larger than {MAX_FILE_BYTES} bytes")], "HR file")
        return self.sync_text(text, by, dry_run)

    def sync_text(self, text: str, by: Principal | None = None,
                  dry_run: bool = False) -> HrReport:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InvalidInput.from_problems(
                [FieldProblem(c, "column missing from the header line") for c in missing],
                "HR file")
        report = HrReport(dry_run=dry_run)
        known = {u.username: u for u in self.users.all()}
        by_employee = {u.employee_id: u.username for u in known.values() if u.employee_id}
        seen: set[str] = set()
        for n, cells in enumerate(reader, start=2):
            values = {str(k).strip().lower(): (v or "").strip() for k, v in cells.items()
                      if k is not None}
            row = self._check(n, values, known, by_employee, seen)
            report.rows += 1
            self._apply(row, report, by, dry_run)
        report.not_in_feed = sorted(u.username for u in known.values()
                                    if u.disabled_at is None and u.username not in seen)
        if not dry_run:
            self._record(report, by, hashlib.sha256(text.encode()).hexdigest())
        return report

    def _check(self, line: int, v: dict[str, str], known: dict[str, User],
               by_employee: dict[str, str], seen: set[str]) -> _Row:
        problems: list[FieldProblem] = []
        username = v.get("username", "")
        user = known.get(username)
        if not username:
            problems.append(FieldProblem("username", "required"))
        elif user is None:
            problems.append(FieldProblem("username", "no such user"))
        elif username in seen:  # rejected (a leaver still leaves)
            problems.append(FieldProblem("username", "named on an earlier line"))
        seen.add(username)
        status = v.get("status", "").lower()
        if status not in STATUSES:
            problems.append(FieldProblem("status", " or ".join(STATUSES)))
        leave_date = None
        if v.get("leave_date"):
            try:
                leave_date = date.fromisoformat(v["leave_date"])
            except ValueError:
                problems.append(FieldProblem("leave_date", "a date YYYY-MM-DD"))
        employee_id = v.get("employee_id") or None
        if employee_id is not None:
            if not EMPLOYEE_ID.fullmatch(employee_id):
                problems.append(FieldProblem("employee_id",
                                             "1 to 64 ASCII letters, digits or . _ - /"))
            elif by_employee.get(employee_id, username) != username:
                problems.append(FieldProblem("employee_id", "belongs to another user"))
            elif user is not None and user.employee_id not in (None, employee_id):
                problems.append(FieldProblem("employee_id", "differs from the account's"))
        manager = v.get("manager") or None
        if manager is not None:
            if manager not in known:
                problems.append(FieldProblem("manager", "no such user"))
            elif manager == username:
                problems.append(FieldProblem("manager", "the user themselves"))
        today = self.clock.now().date()
        leaver = status in LEAVER_STATUSES or (leave_date is not None and leave_date <= today)
        return _Row(line, user, problems, leaver, leave_date, employee_id, manager,
                    v.get("role", ""))

    def _apply(self, row: _Row, report: HrReport, by: Principal | None,
               dry_run: bool) -> None:
        if row.problems:
            report.rejected += 1
            report.errors.append({"line": row.line,
                                  "errors": [p.as_dict() for p in row.problems]})
        user = row.user
        if user is None or (row.problems and not row.leaver):
            return  # a leaver is disabled whatever else is wrong with the row
        if not row.problems:
            report.applied += 1
        why = {"authority": "hr_sync", "line": row.line}
        keys = [k.id for k in self.api_keys.owned_by(user.id) if k.revoked_at is None]
        with self.db.read() if dry_run else self.db.write() as conn:
            if row.leaver:
                if user.disabled_at is None:
                    report.disabled.append(user.username)
                    if not dry_run:
                        self.users.set_disabled_in(conn, user.username, True, by,
                                                   reason="leaver", **why)
                for key_id in keys:
                    report.keys_revoked.append(key_id)
                    if not dry_run:
                        self.api_keys.revoke_in(conn, key_id, by, reason="leaver", **why)
            elif row.leave_date is not None:
                report.leaving.append({"username": user.username,
                                       "leave_date": row.leave_date.isoformat()})
            if row.problems:
                return
            self._record_identity(conn, row, user, report, by, dry_run)
            if row.role and row.role not in user.roles and not row.leaver:
                report.movers.append({"line": row.line, "username": user.username,
                                      "hr_role": row.role, "roles": list(user.roles)})

    def _record_identity(self, conn: Connection, row: _Row, user: User, report: HrReport,
                         by: Principal | None, dry_run: bool) -> None:
        why = {"authority": "hr_sync", "line": row.line}
        if row.employee_id is not None and user.employee_id is None:
            report.employee_ids_set.append(user.username)
            if not dry_run:
                self.users.set_employee_id_in(conn, user.username, row.employee_id, by, **why)
        manager_id = conn.execute(sa.select(users.c.id).where(
            users.c.username == row.manager)).scalar() if row.manager else None
        if row.manager is not None and manager_id != user.manager_id:
            report.managers_set.append({"username": user.username, "manager": row.manager})
            if not dry_run:
                self.users.set_manager_in(conn, user.username, row.manager, by, **why)

    def _record(self, report: HrReport, by: Principal | None, file_sha256: str) -> None:
        """The last sync's time and counts (the compliance posture's "leavers disabled
        against the last HR sync"), and one audit event for the run."""
        now = self.clock.now()
        report.synced_at = iso(now)
        value = json.dumps({"at": iso(now), "rows": report.rows, "applied": report.applied,
                            "rejected": report.rejected, "disabled": len(report.disabled),
                            "file_sha256": file_sha256}, sort_keys=True)
        with self.db.write() as conn:
            done = conn.execute(system_state.update().where(
                system_state.c.key == LAST_SYNC_KEY).values(value=value))
            if done.rowcount == 0:
                conn.execute(system_state.insert(), [{"key": LAST_SYNC_KEY, "value": value}])
            self.audit.append(conn, self.audit.event(
                audit_actor(by) if by else None, "hr.sync", details={
                    "rows": report.rows, "applied": report.applied,
                    "rejected": report.rejected, "disabled": len(report.disabled),
                    "keys_revoked": len(report.keys_revoked), "movers": len(report.movers),
                    "file_sha256": file_sha256}))

    def last_sync(self) -> dict[str, Any] | None:
        """When the HR feed was last applied, and its counts (None: never)."""
        with self.db.read() as conn:
            value = conn.execute(sa.select(system_state.c.value).where(
                system_state.c.key == LAST_SYNC_KEY)).scalar()
        return json.loads(value) if value else None

    # -- dormant accounts ----------------------------------------------------------------------
    def dormant(self) -> list[DormantAccount]:
        """Active staff accounts unused ``dormant_days`` (since the last login, or since
        creation for one never used)."""
        now = self.clock.now()
        found = []
        for u in self.users.all():
            last = u.last_login_at or u.created_at
            if u.disabled_at is None and last < now - timedelta(days=self.dormant_days):
                found.append(DormantAccount(u.username, last, (now - last).days))
        return found

    def disable_dormant(self, by: Principal | None = None,
                        dry_run: bool = False) -> list[DormantAccount]:
        """Disable the dormant accounts (sessions end), each audited as ``user.disable``
        with reason ``dormant``; returns them."""
        found = self.dormant()
        if dry_run:
            return found
        done = []
        for d in found:
            with self.db.write() as conn:
                # Logged in since the look, or disabled meanwhile: left alone.
                row = conn.execute(sa.select(users.c.last_login_at, users.c.disabled_at)
                                   .where(users.c.username == d.username)).first()
                if row is None or row.disabled_at is not None or (
                        row.last_login_at is not None and row.last_login_at > d.last_used_at):
                    continue
                self.users.set_disabled_in(conn, d.username, True, by, reason="dormant",
                                           idle_days=d.idle_days,
                                           last_used_at=iso_or_none(d.last_used_at))
            done.append(d)
        return done

    def run_forever(self, by: Principal, stop: threading.Event,
                    interval_seconds: float) -> None:
        """The schedule ``fiduciary serve`` runs in a background thread (first run one
        interval after the start)."""
        while not stop.wait(interval_seconds):
            try:
                done = self.disable_dormant(by)
                if done:
                    log.info("dormant accounts disabled: %d", len(done))
            except Exception:
                log.exception("dormant account check failed")
