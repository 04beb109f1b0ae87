"""Data-subject requests answered on time, per month, for a dashboard chart. A request counts
in the month its response was due (once that moment has passed): on time if it was closed
(fulfilled, partly fulfilled or denied) by its due date — an extension moves the due date, as
GDPR Art. 12(3) and CCPA 1798.145 allow — late if closed after it or still open. Counts name
nobody, so reading them leaves no audit event (as ``DsrService.due_counts``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import sqlalchemy as sa

from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.privacy.dsr import DsrService
from fiduciary.storage.schema import dsr_requests

#: The longest window a chart may ask about.
MAX_MONTHS = 60


@dataclass(frozen=True)
class MonthOnTime:
    """One calendar month (UTC): requests due in it so far, and those answered in time."""

    month: date
    due: int
    on_time: int

    @property
    def rate(self) -> float | None:
        """Share answered on time; None for a month with no request due."""
        return self.on_time / self.due if self.due else None


def _month_start(day: date, back: int) -> date:
    """The first day of the month ``back`` months before ``day``'s."""
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def on_time_by_month(service: DsrService, principal: Principal, months: int = 12
                     ) -> list[MonthOnTime]:
    """The last ``months`` calendar months, the current one last. For the privacy office
    and for compliance, who read the same request statistics in the CCPA metrics."""
    # Aggregates touch no customer data: no API key scope applies.
    require_permission(principal, Permission.PRIVACY_MANAGE, Permission.COMPLIANCE_READ,
                       scope=None)
    if not 1 <= months <= MAX_MONTHS:
        raise InvalidInput.from_problems([FieldProblem("months", f"1 to {MAX_MONTHS}")],
                                         "query")
    now = service.clock.now().astimezone(UTC)
    starts = [_month_start(now.date(), back) for back in range(months - 1, -1, -1)]
    d = dsr_requests.c
    since = datetime.combine(starts[0], time(0), tzinfo=UTC)
    due = {m: 0 for m in starts}
    on_time = {m: 0 for m in starts}
    with service.db.read() as conn:
        for due_at, closed_at in conn.execute(sa.select(d.due_at, d.closed_at).where(
                d.due_at >= since, d.due_at <= now)):
            month = _month_start(_utc(due_at).date(), 0)
            if month not in due:
                continue
            due[month] += 1
            if closed_at is not None and _utc(closed_at) <= _utc(due_at):
                on_time[month] += 1
    return [MonthOnTime(m, due[m], on_time[m]) for m in starts]


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)
