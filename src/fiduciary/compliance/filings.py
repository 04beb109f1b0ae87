"""The annual filings compliance produces from what Fiduciary holds, as JSON and HTML.

**NYDFS 23 NYCRR 500.17(b)** — by 15 April of year Y+1 a covered entity files, for calendar
year Y, either a *Certification of Material Compliance* or an *Acknowledgment of
Noncompliance* that names every Part 500 section it did not materially comply with, the nature
and extent of the noncompliance and a remediation timeline; both are signed by the
highest-ranking executive and the CISO, and the supporting records are kept five years
(500.17(b)(2)). The draft::

    every control whose sections include a Part 500 section
      ├─ its results during Y (the posture history)
      │    any fail ............ the control failed during the year
      │    else any pass ....... passed
      │    else not applicable . ignored
      │    no result at all .... not evidenced (counts as not passing)
      ├─ all passed or n/a ─▶ Certification of Material Compliance
      └─ otherwise ─────────▶ Acknowledgment of Noncompliance: per failing section the
                              controls, the extent (checks failed, first and last failure,
                              whether it passed by year end, the latest failing facts) and a
                              blank remediation timeline for the signers to fill

A failure on any day of the year is listed: whether it was *material* is the signers' judgement,
which the draft informs and does not make. Each draft is stored (``compliance_filings``, kept
until five years after the later of its creation and the due date) and audited.

**CCPA regs § 7102(a)** — a business handling the personal information of 10 million
Californians or more discloses, for the previous calendar year, per kind of request: how many it
received, complied with in whole or in part, and denied, and the median or mean days to respond.
Read from the request log (``dsr_requests``, CCPA regime only), by the year of *receipt*:

    know ................. requests to know (``know``)
    delete ............... requests to delete (``delete``)
    correct .............. requests to correct (``correct``)
    opt_out .............. requests to opt out of sale/sharing (``opt_out_sale_sharing``)
    limit ................ requests to limit use of sensitive PI (``limit_sensitive``)

complied in whole = ``fulfilled``, in part = ``partially_fulfilled``, denied = ``denied``; a
request still open is ``pending``. Days to respond: calendar days from the date of receipt to
the date of closure, over closed requests (a denial is a response). Years and days are the
controller's (``FIDUCIARY_CONTROLLER_TIMEZONE``, UTC by default), as in the statutory periods.
No customer value is read: the metrics count rows.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

import jinja2
import sqlalchemy as sa

from fiduciary.audit.events import AuditLog, actor_label, audit_actor
from fiduciary.clock import Clock, iso
from fiduciary.compliance.model import Control, ControlResult, Status
from fiduciary.compliance.oscal import regulation_of
from fiduciary.errors import FieldProblem, InvalidInput, NotFound
from fiduciary.ids import new_id
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.privacy.deadlines import CCPA, local_day
from fiduciary.privacy.dsr import DENIED, FULFILLED, OPEN, PARTIALLY_FULFILLED
from fiduciary.storage import Database
from fiduciary.storage.schema import compliance_filings, dsr_requests

NYDFS_CERTIFICATION = "nydfs_500_17b"
CERTIFICATION = "certification"
ACKNOWLEDGMENT = "acknowledgment"
TITLES = {CERTIFICATION: "Certification of Material Compliance",
          ACKNOWLEDGMENT: "Acknowledgment of Noncompliance"}
#: 500.17(b)(2): records supporting the filing are kept five years.
RETENTION_YEARS = 5
#: Part 500 applied from 28 August 2017; the first certification covered 2017.
FIRST_NYDFS_YEAR = 2017
FIRST_YEAR = 2000
#: Who signs (500.17(b)(1)(iii)).
SIGNATORIES = (("highest_ranking_executive", "Highest-ranking executive"),
               ("ciso", "Chief Information Security Officer"))
NOT_EVIDENCED = "not_evidenced"

#: CCPA metric → (the request type in the log, its label in § 7102(a)).
CCPA_KINDS: dict[str, tuple[str, str]] = {
    "know": ("know", "Requests to know"),
    "delete": ("delete", "Requests to delete"),
    "correct": ("correct", "Requests to correct"),
    "opt_out": ("opt_out_sale_sharing", "Requests to opt out of sale/sharing"),
    "limit": ("limit_sensitive", "Requests to limit use of sensitive personal information"),
}

ResultsBetween = Callable[[datetime, datetime], Sequence[ControlResult]]
Controls = Callable[[], Sequence[Control]]


def _year_bounds(year: int, zone: tzinfo = UTC) -> tuple[datetime, datetime]:
    """The calendar year in the controller's time zone, as UTC instants."""
    return (datetime(year, 1, 1, tzinfo=zone).astimezone(UTC),
            datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC))


def check_year(year: int, now: datetime, first: int = FIRST_YEAR,
               zone: tzinfo = UTC) -> None:
    """A filing covers a calendar year that has ended (and one the rule applied to)."""
    if year < first:
        raise InvalidInput.from_problems(
            [FieldProblem("year", f"must be {first} or later")], what="year")
    if year >= local_day(now, zone).year:
        raise InvalidInput.from_problems(
            [FieldProblem("year", "the calendar year has not ended")], what="year")


def nydfs_due(year: int) -> date:
    return date(year + 1, 4, 15)


def part_500_sections(control: Control) -> list[str]:
    """The Part 500 sections a control serves, as the catalogue writes them without the
    regulation's name ("NYDFS 500.7(a)(4)" → "500.7(a)(4)")."""
    return [s.split(None, 1)[1] if len(s.split(None, 1)) > 1 else s
            for s in control.sections if regulation_of(s) == "nydfs"]


def _year_status(results: Sequence[ControlResult]) -> str:
    statuses = {r.status for r in results}
    for status in (Status.FAIL, Status.PASS, Status.NOT_APPLICABLE):
        if status in statuses:
            return status.value
    return NOT_EVIDENCED


def _extent(results: Sequence[ControlResult], status: str) -> dict[str, Any]:
    if status == NOT_EVIDENCED:
        return {"checks": 0, "failed_checks": 0, "note": "not checked during the year"}
    failed = [r for r in results if r.status is Status.FAIL]
    latest = max(results, key=lambda r: r.checked_at)
    last_failed = max(failed, key=lambda r: r.checked_at)
    return {"checks": len(results), "failed_checks": len(failed),
            "first_failed_at": iso(min(r.checked_at for r in failed)),
            "last_failed_at": iso(last_failed.checked_at),
            "passing_at_year_end": latest.status is not Status.FAIL,
            "facts": dict(last_failed.outcome.facts)}


def nydfs_certification(year: int, controls: Sequence[Control],
                        results: Sequence[ControlResult], now: datetime,
                        zone: tzinfo = UTC) -> dict[str, Any]:
    """The draft 500.17(b) filing for ``year`` from the results checked during that year."""
    start, end = _year_bounds(year, zone)
    by_control: dict[str, list[ControlResult]] = {}
    for r in results:
        if start <= r.checked_at < end:
            by_control.setdefault(r.control.id, []).append(r)
    rows: list[dict[str, Any]] = []
    failing: dict[str, list[dict[str, Any]]] = {}
    for control in controls:
        sections = part_500_sections(control)
        if not sections:
            continue
        mine = sorted(by_control.get(control.id, []), key=lambda r: r.checked_at)
        status = _year_status(mine)
        rows.append({"id": control.id, "title": control.title, "sections": sections,
                     "status": status, "checks": len(mine)})
        if status in (Status.FAIL.value, NOT_EVIDENCED):
            for section in sections:
                failing.setdefault(section, []).append({
                    "id": control.id, "title": control.title, "status": status,
                    "extent": _extent(mine, status)})
    form = ACKNOWLEDGMENT if failing else CERTIFICATION
    if form == CERTIFICATION:
        statement = (f"The Board of Directors or a Senior Officer certifies that the covered "
                     f"entity was in material compliance with 23 NYCRR Part 500 during "
                     f"calendar year {year}.")
    else:
        statement = (f"The covered entity acknowledges that it did not materially comply "
                     f"with the sections of 23 NYCRR Part 500 listed below during calendar "
                     f"year {year}, describes the nature and extent of the noncompliance and "
                     f"provides a remediation timeline for each.")
    return {
        "kind": NYDFS_CERTIFICATION,
        "form": form,
        "title": TITLES[form],
        "regulation": "23 NYCRR 500.17(b)",
        "draft": True,
        "calendar_year": year,
        "period": {"from": date(year, 1, 1).isoformat(), "to": date(year, 12, 31).isoformat()},
        "due": nydfs_due(year).isoformat(),
        "generated_at": iso(now),
        "statement": statement,
        "controls": rows,
        "failing_sections": [
            {"section": section, "controls": items,
             # The signers write it: the software knows the gap, not the plan to close it.
             "remediation_timeline": ""}
            for section, items in sorted(failing.items(), key=lambda kv: _section_key(kv[0]))],
        "signatures": [{"role": role, "title": title, "name": "", "signature": "", "date": ""}
                       for role, title in SIGNATORIES],
    }


def _section_key(section: str) -> tuple[tuple[int, ...], str]:
    """500.7(a)(4) before 500.12, 500.13(a) before 500.13(b): by the numbers of the section,
    then its paragraph."""
    head, _, paragraph = section.partition("(")
    return tuple(int(p) for p in head.split(".") if p.isdigit()), paragraph


def _days(received: datetime, closed: datetime, zone: tzinfo) -> int:
    return (local_day(closed, zone) - local_day(received, zone)).days


def _stat(values: list[int], fn: Callable[[list[int]], float]) -> float | None:
    return round(float(fn(values)), 1) if values else None


def ccpa_metrics(year: int, rows: Sequence[Mapping[str, Any]], now: datetime,
                 zone: tzinfo = UTC) -> dict[str, Any]:
    """The § 7102(a) metrics of ``year`` from request-log rows (type, status, received_at,
    closed_at) of requests received that year under the CCPA; days are ``zone``'s."""
    metrics: dict[str, Any] = {}
    for key, (dsr_type, label) in CCPA_KINDS.items():
        mine = [r for r in rows if r["type"] == dsr_type]
        closed = [r for r in mine if r["status"] not in OPEN and r["closed_at"] is not None]
        days = [_days(r["received_at"], r["closed_at"], zone) for r in closed]
        whole = sum(1 for r in mine if r["status"] == FULFILLED)
        part = sum(1 for r in mine if r["status"] == PARTIALLY_FULFILLED)
        metrics[key] = {
            "label": label, "request_type": dsr_type,
            "received": len(mine),
            "complied_in_whole_or_in_part": whole + part,
            "complied_in_whole": whole, "complied_in_part": part,
            "denied": sum(1 for r in mine if r["status"] == DENIED),
            "pending": sum(1 for r in mine if r["status"] in OPEN),
            "median_days_to_respond": _stat(days, statistics.median),
            "mean_days_to_respond": _stat(days, statistics.fmean),
        }
    return {
        "kind": "ccpa_7102_metrics",
        "title": "CCPA consumer request metrics",
        "regulation": "Cal. Code Regs. tit. 11, § 7102(a)",
        "calendar_year": year,
        "period": {"from": date(year, 1, 1).isoformat(), "to": date(year, 12, 31).isoformat()},
        "generated_at": iso(now),
        "basis": "requests received during the year under the CCPA; days are calendar days "
                 f"from the date of receipt to the date of the response ({_zone_name(zone)})",
        "requests": metrics,
    }


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or "UTC")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fiduciary.compliance", "templates"),
        # Every page escapes, whatever its name: facts name staff accounts.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                            default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
    )


_TEMPLATES = {NYDFS_CERTIFICATION: "nydfs_certification.html.j2",
              "ccpa_7102_metrics": "ccpa_metrics.html.j2"}


def render_html(document: Mapping[str, Any]) -> str:
    """One self-contained HTML page (inline style, nothing fetched) for a filing or the
    metrics, by its ``kind``."""
    template = _environment().get_template(_TEMPLATES[document["kind"]])
    return template.render(doc=document, facts_json=_facts_json)


def _facts_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Filing:
    id: str
    kind: str
    year: int
    status: str
    body: dict[str, Any]
    body_sha256: str
    created_by: str
    created_at: datetime
    retain_until: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "year": self.year, "status": self.status,
                "body_sha256": self.body_sha256, "created_by": self.created_by,
                "created_at": iso(self.created_at), "retain_until": iso(self.retain_until),
                "body": self.body}


def _add_years(day: datetime, years: int) -> datetime:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February → 28 February
        return day.replace(year=day.year + years, day=28)


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


class FilingService:
    """Drafts the NYDFS certification (stored, audited) and computes the CCPA metrics."""

    def __init__(self, db: Database, clock: Clock, audit: AuditLog,
                 results_between: ResultsBetween, controls: Controls,
                 zone: tzinfo = UTC) -> None:
        self.db = db
        #: The controller's time zone: its calendar years and days count.
        self.zone = zone
        self.clock = clock
        self.audit = audit
        self._results_between = results_between
        self._controls = controls

    def _year(self, year: int | None, now: datetime) -> int:
        """The year asked for, or the previous calendar year."""
        return local_day(now, self.zone).year - 1 if year is None else year

    def nydfs_draft(self, year: int | None = None) -> dict[str, Any]:
        """The draft for ``year`` (default: the previous calendar year) as it stands now, not
        stored (a preview)."""
        now = self.clock.now()
        year = self._year(year, now)
        check_year(year, now, FIRST_NYDFS_YEAR, self.zone)
        start, end = _year_bounds(year, self.zone)
        return nydfs_certification(year, self._controls(), self._results_between(start, end),
                                   now, self.zone)

    def draft_nydfs(self, principal: Principal, year: int | None = None) -> Filing:
        """Draft the 500.17(b) filing for ``year`` (default: the previous calendar year), store
        it for five years, audit it. Drafting what the CEO and the CISO will sign is the
        compliance officer's act (``compliance:attest``), not a reader's."""
        require_permission(principal, Permission.COMPLIANCE_ATTEST, scope=None)
        body = self.nydfs_draft(year)
        year = int(body["calendar_year"])
        now = self.clock.now()
        due = datetime.combine(nydfs_due(year), datetime.min.time(), UTC)
        retain_until = _add_years(max(now, due), RETENTION_YEARS)
        canonical = _canonical(body)
        filing = Filing(id=new_id(), kind=NYDFS_CERTIFICATION, year=year, status=body["form"],
                        body=body, body_sha256=hashlib.sha256(canonical.encode()).hexdigest(),
                        created_by=actor_label(principal), created_at=now,
                        retain_until=retain_until)
        with self.db.write() as conn:
            conn.execute(compliance_filings.insert().values(
                id=filing.id, kind=filing.kind, year=year, status=filing.status,
                body=canonical, body_sha256=filing.body_sha256, created_by=filing.created_by,
                created_at=now, retain_until=retain_until))
            self.audit.append(conn, self.audit.event(
                audit_actor(principal), "compliance.filing_drafted", details={
                    "filing_id": filing.id, "kind": filing.kind, "year": year,
                    "status": filing.status, "body_sha256": filing.body_sha256,
                    "failing_sections": [s["section"] for s in body["failing_sections"]],
                    "retain_until": iso(retain_until)}))
        return filing

    def filing(self, filing_id: str) -> Filing:
        with self.db.read() as conn:
            row = conn.execute(sa.select(compliance_filings).where(
                compliance_filings.c.id == filing_id)).first()
        if row is None:
            raise NotFound("no such filing")
        return Filing(id=row.id, kind=row.kind, year=row.year, status=row.status,
                      body=json.loads(row.body), body_sha256=row.body_sha256,
                      created_by=row.created_by, created_at=row.created_at,
                      retain_until=row.retain_until)

    def ccpa_metrics(self, year: int | None = None) -> dict[str, Any]:
        """The § 7102(a) metrics of ``year`` (default: the previous calendar year)."""
        now = self.clock.now()
        year = self._year(year, now)
        check_year(year, now, zone=self.zone)
        start, end = _year_bounds(year, self.zone)
        c = dsr_requests.c
        with self.db.read() as conn:
            rows = [dict(r) for r in conn.execute(
                sa.select(c.type, c.status, c.received_at, c.closed_at).where(
                    c.regime == CCPA, c.received_at >= start, c.received_at < end)
            ).mappings()]
        return ccpa_metrics(year, rows, now, self.zone)
