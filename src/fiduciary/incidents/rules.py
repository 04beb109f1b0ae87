"""The breach-notification rules table and the obligations it derives from an incident's facts.

The table is data (``default_rules.yaml``, shipped with the package; an insurer may name its own
file): one row per duty to tell someone, each with its legal citation (``basis``), the date a
person last checked it against the text (``last_verified``), the conditions under which it
applies and its clock. :func:`load_rules` validates a file like the detection pack: a wrong file
raises :class:`RulesInvalid` naming every problem as ``file: rows[i].field: reason``.
:func:`derive` is a pure function of the table and the facts::

    IncidentFacts ──┐
    ScopeFacts ─────┼─ derive(rules, ...) ──> [Obligation(rule_id, recipient, due_at, status)]
    holidays ───────┘

**The clocks.** Hours and days are exact durations from the anchor instant, computed in UTC (so
a daylight-saving change never adds or removes an hour), and a deadline "within 30 days" falls
at the same instant 30 days later, never at the end of that day: earlier by up to a day than the
most generous reading, never later. Business days are counted on the calendar of the row's
``timezone`` (a local business day, not a UTC one, which could end hours after the local one):
the Nth working day after the anchor's local day, Monday to Friday, skipping the row's
``holiday_calendar`` (a country or ``US-XX`` state calendar of the ``holidays`` package) and the
``holidays`` passed to :func:`derive`, at the anchor's local time of day — the counting and
the holiday calendars of :mod:`fiduciary.privacy.deadlines`, which this module reuses.
``days_after_year_end`` falls at the end of that day after 31 December of the anchor's year (the
HIPAA annual log: 1 March, or 29 February when the next year is a leap year).

**What the rules decide and what a person decides.** An obligation is ``not_required`` only
where the table alone can tell: an encryption safe harbour when every affected record was only
ever exposed as ciphertext with its keys safe. Judgements ("unlikely to result in a risk",
"material harm reasonably likely") stay ``due`` until a person records otherwise; the rules
never guess them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from fiduciary.datamap import Classification
from fiduciary.errors import FieldProblem, RulesInvalid
from fiduciary.privacy.deadlines import HolidayCalendar, add_business_days, public_holidays

DEFAULT_RULES = "default_rules.yaml"

_CODE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
_GROUP_REF = re.compile(r"^@[a-z][a-z0-9_]*$")
#: The ``by_jurisdiction`` key of affected people whose residence is not known: they count in
#: totals but match no row's jurisdictions (a person must place them).
UNKNOWN_JURISDICTION = "unknown"


class IncidentKind(StrEnum):
    UNAUTHORIZED_ACCESS = "unauthorized_access"
    LOST_DEVICE = "lost_device"
    RANSOMWARE = "ransomware"
    EXTORTION = "extortion"
    MISDIRECTED_DISCLOSURE = "misdirected_disclosure"
    VENDOR_BREACH = "vendor_breach"
    OTHER = "other"


class ObligationStatus(StrEnum):
    DUE = "due"
    NOT_REQUIRED = "not_required"


class Anchor(StrEnum):
    """The fact of the incident a row's clock starts from."""

    DISCOVERED_AT = "discovered_at"
    DETERMINED_AT = "determined_at"
    EXTORTION_PAID_AT = "extortion_paid_at"


class Comparison(StrEnum):
    AT_LEAST = "at_least"
    MORE_THAN = "more_than"

    def reached(self, count: int, minimum: int) -> bool:
        return count >= minimum if self is Comparison.AT_LEAST else count > minimum


class Count(StrEnum):
    """Whom ``min_affected`` and ``fewer_than`` count: the affected people in the row's
    jurisdictions, or everyone affected by the incident."""

    IN_JURISDICTIONS = "in_jurisdictions"
    TOTAL = "total"


def _aware(name: str, moment: datetime | None) -> None:
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC)")


@dataclass(frozen=True)
class IncidentFacts:
    """What is known of the incident itself. Datetimes are aware (UTC, or any offset: the
    clocks run in UTC); ``determined_at`` is when the insurer determined that a cybersecurity
    incident occurred (NYDFS's and NAIC's clock); ``extortion_paid_at`` when an extortion
    payment was made, if one was."""

    kind: str
    discovered_at: datetime
    determined_at: datetime | None
    extortion_paid_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in {k.value for k in IncidentKind}:
            raise ValueError(f"unknown incident kind {self.kind!r}")
        _aware("discovered_at", self.discovered_at)
        _aware("determined_at", self.determined_at)
        _aware("extortion_paid_at", self.extortion_paid_at)


@dataclass(frozen=True)
class ScopeFacts:
    """Who and what the incident affects.

    ``by_jurisdiction`` counts affected people by residence: ISO 3166-1 alpha-2 countries
    (``DE``), US states as ``US-XX``, ``US`` without a state, ``unknown`` (see
    :data:`UNKNOWN_JURISDICTION`). ``classifications`` are the data classes of the affected
    records (``personal``, ``financial``, ``government_id``, ``special_category``), listed even
    when they were exposed only as ciphertext; ``ciphertext_only`` says that every affected
    record was only ever exposed as ciphertext with its keys not compromised (the encryption
    safe harbours). ``total`` is everyone affected, whatever their residence."""

    by_jurisdiction: Mapping[str, int]
    classifications: frozenset[str]
    ciphertext_only: bool
    total: int

    def __post_init__(self) -> None:
        for code, n in self.by_jurisdiction.items():
            if not (_CODE.match(code) or code == UNKNOWN_JURISDICTION):
                raise ValueError(f"jurisdiction {code!r} is not an ISO 3166 code (DE, US-CA)")
            if n < 0:
                raise ValueError(f"negative count for jurisdiction {code}")
        if self.total < 0:
            raise ValueError("total must not be negative")
        known = {c.value for c in Classification}
        unknown = sorted(set(self.classifications) - known)
        if unknown:
            raise ValueError(f"unknown data classes {unknown} (known: {sorted(known)})")


@dataclass(frozen=True)
class Obligation:
    """One duty to tell someone, derived from a row of the table.

    ``due_at`` is None when the law sets no fixed deadline ("without undue delay", "most
    expedient time"); ``due_note`` then says what it does set. ``status`` is an
    :class:`ObligationStatus` value; ``reason`` says why when the rules derived
    ``not_required`` (an encryption safe harbour), and ``due_at`` is then None."""

    rule_id: str
    regime: str
    recipient: str
    basis: str
    due_at: datetime | None
    due_note: str | None
    status: str
    reason: str | None


# -- the table --------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _jurisdiction(v: str) -> str:
    if not _CODE.match(v):
        raise ValueError(f"{v!r} is not an ISO 3166 code (DE, or US-CA for a state)")
    return v


def _jurisdiction_or_group(v: str) -> str:
    if not (_CODE.match(v) or _GROUP_REF.match(v)):
        raise ValueError(f"{v!r} is neither an ISO 3166 code (DE, US-CA) nor an @group")
    return v


Jurisdiction = Annotated[str, AfterValidator(_jurisdiction)]
JurisdictionOrGroup = Annotated[str, AfterValidator(_jurisdiction_or_group)]
GroupName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class Rule(_Strict):
    """One row. Conditions that need the scope: ``jurisdictions``, ``classifications``, the
    thresholds and ``safe_harbour``; rows with none of the first three apply to every
    incident whose anchor is set."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    regime: str
    recipient: str
    basis: str
    last_verified: date
    note: str | None = None
    jurisdictions: tuple[JurisdictionOrGroup, ...] = ()
    classifications: tuple[Classification, ...] = ()
    min_affected: int | None = Field(None, ge=1)
    min_affected_per_state: int | None = Field(None, ge=1)
    comparison: Comparison | None = None
    fewer_than: int | None = Field(None, ge=1)
    count: Count = Count.IN_JURISDICTIONS
    anchor: Anchor
    hours: int | None = Field(None, ge=0, le=24 * 366)
    days: int | None = Field(None, ge=0, le=366)
    business_days: int | None = Field(None, ge=1, le=60)
    days_after_year_end: int | None = Field(None, ge=0, le=366)
    timezone: str = "UTC"
    holiday_calendar: str | None = None
    due_note: str | None = None
    safe_harbour: str | None = None

    @field_validator("regime", "recipient", "basis")
    @classmethod
    def _nonblank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as America/Chicago)"
                             ) from None
        return v

    @field_validator("holiday_calendar")
    @classmethod
    def _calendar(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                public_holidays(v, 2026)
            except ValueError:
                raise ValueError(f"unknown holiday calendar {v!r} (a country or country-"
                                 "subdivision of the holidays package, such as US-LA)") from None
        return v

    @property
    def needs_scope(self) -> bool:
        return bool(self.jurisdictions or self.classifications or self.min_affected
                    or self.min_affected_per_state or self.fewer_than)


class RulesTable(_Strict):
    version: int = Field(ge=1, le=1)
    extends: str | None = None
    remove: tuple[str, ...] = ()
    groups: dict[GroupName, tuple[Jurisdiction, ...]] = Field(default_factory=dict)
    rows: tuple[Rule, ...]
    source: str = ""

    def rule(self, rule_id: str) -> Rule:
        for row in self.rows:
            if row.id == rule_id:
                return row
        raise KeyError(rule_id)

    def codes(self, rule: Rule) -> frozenset[str]:
        """The jurisdiction codes a row names, its groups expanded."""
        out: set[str] = set()
        for entry in rule.jurisdictions:
            out.update(self.groups[entry[1:]] if entry.startswith("@") else (entry,))
        return frozenset(out)


def load_rules(path: Path | None) -> RulesTable:
    """The rules table at ``path``, or the packaged default when None.

    An insurer's file is either a whole table or, with ``extends: default``, an override of the
    packaged one: its rows replace the default rows of the same id (whole rows, with their own
    citation and ``last_verified``) or are added after them, ``remove`` drops default rows by
    id, and its ``groups`` replace default groups of the same name. Raises
    :class:`RulesInvalid` naming every problem."""
    default = _default_text()
    if path is None:
        return parse_rules(default, f"<package>/{DEFAULT_RULES}")
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise RulesInvalid(f"{path}: cannot read rules table ({exc.strerror})",
                           [FieldProblem(str(path), "cannot read file")]) from None
    return parse_rules(text, str(path), base=default)


def _default_text() -> str:
    return resources.files("fiduciary.incidents").joinpath(DEFAULT_RULES).read_text("utf-8")


def parse_rules(text: str, source: str, base: str | None = None) -> RulesTable:
    """Validate ``text`` (named ``source`` in errors); ``base`` is the text ``extends: default``
    refers to. Every problem is named in one pass: the rows that validate on their own are
    checked further even when others do not."""
    doc = _document(text, source)
    parent = (parse_rules(base, f"<package>/{DEFAULT_RULES}")
              if doc.get("extends") == "default" and base is not None else None)
    problems: list[FieldProblem] = []
    table: RulesTable | None = None
    try:
        table = RulesTable.model_validate({**doc, "source": source})
    except ValidationError as exc:
        problems += [FieldProblem(f"{source}: {_where(err['loc'])}", err["msg"])
                     for err in exc.errors()]
    groups = set(parent.groups if parent else ()) | set(
        doc["groups"] if isinstance(doc.get("groups"), dict) else ())
    ids: set[str] = set()
    raw_rows = doc.get("rows")
    for i, raw in enumerate(raw_rows if isinstance(raw_rows, list) else []):
        try:
            row = table.rows[i] if table else Rule.model_validate(raw)
        except ValidationError:
            continue  # named above
        if row.id in ids:
            problems.append(FieldProblem(f"{source}: rows[{i}].id", "duplicate row id"))
        ids.add(row.id)
        problems += _row_problems(row, groups, f"{source}: rows[{i}]")
    if table is not None and table.extends is None and table.remove:
        problems.append(FieldProblem(f"{source}: remove", "only with extends: default"))
    if table is not None and table.extends is not None and parent is None:
        problems.append(FieldProblem(f"{source}: extends", "the only table to extend is "
                                                           "'default'"))
    if parent is not None and table is not None:
        known = {row.id for row in parent.rows}
        problems += [FieldProblem(f"{source}: remove[{i}]", "not a row id of the default table")
                     for i, rid in enumerate(table.remove) if rid not in known]
    if problems or table is None:
        _fail(problems)
    if parent is None:
        return table
    replacing = {row.id: row for row in table.rows}
    rows = [replacing.pop(row.id, row) for row in parent.rows if row.id not in table.remove]
    rows += [row for row in table.rows if row.id in replacing]
    return RulesTable(version=table.version, groups={**parent.groups, **table.groups},
                      rows=tuple(rows), source=source)


def _document(text: str, source: str) -> dict[str, Any]:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        raise RulesInvalid(f"{source}: {where}: not valid YAML",
                           [FieldProblem(f"{source}: {where}", "not valid YAML")]) from None
    return doc if isinstance(doc, dict) else {}


def _where(loc: tuple[int | str, ...]) -> str:
    """``("rows", 3, "anchor")`` as ``rows[3].anchor``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def _row_problems(row: Rule, groups: set[str], where: str) -> list[FieldProblem]:
    """What one field cannot say alone: known groups, one deadline, a note where there is
    none, thresholds with their comparison, business days with their zone."""
    problems: list[FieldProblem] = []

    def problem(field: str, reason: str) -> None:
        problems.append(FieldProblem(f"{where}.{field}", reason))

    for j, entry in enumerate(row.jurisdictions):
        if entry.startswith("@") and entry[1:] not in groups:
            problem(f"jurisdictions[{j}]", "not a group of this table")
    periods = [name for name in ("hours", "days", "business_days", "days_after_year_end")
               if getattr(row, name) is not None]
    if len(periods) > 1:
        problem(periods[1], f"one deadline per row (also {periods[0]})")
    if not periods and not row.due_note:
        problem("due_note", "required when the row sets no deadline (say what the law says)")
    if row.holiday_calendar is not None and row.business_days is None:
        problem("holiday_calendar", "only with business_days")
    if row.business_days is not None and "timezone" not in row.model_fields_set:
        problem("timezone", "required with business_days (whose local days count)")
    has_minimum = row.min_affected is not None or row.min_affected_per_state is not None
    if has_minimum and row.comparison is None:
        problem("comparison", "required with a minimum: at_least or more_than")
    if row.comparison is not None and not has_minimum:
        problem("comparison", "only with min_affected or min_affected_per_state")
    return problems


def _fail(problems: list[FieldProblem]) -> NoReturn:
    raise RulesInvalid("rules table invalid: " + "; ".join(
        f"{p.field}: {p.reason}" for p in problems), problems)


# -- derivation -------------------------------------------------------------------------------
def derive(rules: RulesTable, incident: IncidentFacts, scope: ScopeFacts | None,
           holidays: Iterable[date] = ()) -> list[Obligation]:
    """The obligations the table derives from the facts, in table order.

    A row yields nothing (it does not apply, or not yet) when its anchor is not set — no
    ``determined_at`` yet, no extortion payment — or when its conditions on who and what is
    affected do not hold. With ``scope=None`` (scope not computed yet) only the rows that do
    not depend on who is affected are derived (NYDFS 500.17(a), the NAIC commissioner of the
    domicile, the GDPR Art. 33(5) register, the extortion timers); the rest are pending and
    simply not produced: derive again once the scope is known. ``holidays`` are days on which
    no business day is counted, on top of each row's holiday calendar."""
    closed = frozenset(holidays)
    out: list[Obligation] = []
    for row in rules.rows:
        start = _anchor(row.anchor, incident)
        if start is None:
            continue
        if scope is None:
            if row.needs_scope:
                continue
        elif not _applies(rules, row, scope):
            continue
        if scope is not None and scope.ciphertext_only and row.safe_harbour:
            out.append(Obligation(row.id, row.regime, row.recipient, row.basis, None, None,
                                  ObligationStatus.NOT_REQUIRED,
                                  f"encryption safe harbour: {row.safe_harbour}"))
            continue
        out.append(Obligation(row.id, row.regime, row.recipient, row.basis,
                              due_at(row, start, closed), row.due_note, ObligationStatus.DUE,
                              None))
    return out


def _anchor(anchor: Anchor, incident: IncidentFacts) -> datetime | None:
    moment: datetime | None = getattr(incident, anchor.value)
    return moment


def _applies(rules: RulesTable, row: Rule, scope: ScopeFacts) -> bool:
    codes = rules.codes(row)
    affected = {code: n for code, n in scope.by_jurisdiction.items()
                if n > 0 and (not codes or code in codes or code[:2] in codes)}
    if codes and not affected:
        return False
    if row.classifications and not set(row.classifications) & scope.classifications:
        return False
    counted = (scope.total if row.count is Count.TOTAL or not codes
               else sum(affected.values()))
    comparison = row.comparison or Comparison.AT_LEAST
    if row.min_affected is not None and not comparison.reached(counted, row.min_affected):
        return False
    if row.fewer_than is not None and not counted < row.fewer_than:
        return False
    return row.min_affected_per_state is None or any(
        comparison.reached(n, row.min_affected_per_state) for n in affected.values())


def due_at(row: Rule, anchor: datetime, holidays: frozenset[date] = frozenset()
           ) -> datetime | None:
    """When ``row`` falls due for a clock started at ``anchor`` (aware), in UTC; None when the
    row sets no deadline."""
    start = anchor.astimezone(UTC)
    if row.hours is not None:
        return start + timedelta(hours=row.hours)
    if row.days is not None:
        return start + timedelta(days=row.days)
    zone = ZoneInfo(row.timezone)
    local = start.astimezone(zone)
    if row.business_days is not None:
        closed = HolidayCalendar((row.holiday_calendar,) if row.holiday_calendar else (),
                                 holidays)
        day = add_business_days(local.date(), row.business_days, closed)
        return datetime.combine(day, local.time(), zone).astimezone(UTC)
    if row.days_after_year_end is not None:
        day = date(local.year, 12, 31) + timedelta(days=row.days_after_year_end)
        return datetime.combine(day, time.max, zone).astimezone(UTC)
    return None

