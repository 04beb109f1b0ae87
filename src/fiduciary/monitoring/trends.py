"""Alert counts over time for a dashboard chart: how many alerts the detections raised per
day. Counts name nobody, so reading them leaves no audit event (as ``DsrService.due_counts``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa

from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.monitoring.alerts import AlertService
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.storage.schema import alerts

#: The longest window a chart may ask about.
MAX_DAYS = 366


def alerts_per_day(service: AlertService, principal: Principal, days: int = 30
                   ) -> list[tuple[date, int]]:
    """Alerts raised on each of the last ``days`` UTC days, today last (days with none
    counted as 0). Like :meth:`AlertService.list_alerts`, a person's own alerts are left out:
    a count that rises on the day one is raised about you would tip you off."""
    require_permission(principal, Permission.ALERTS_READ, Permission.ALERTS_MANAGE,
                       scope=None)
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput.from_problems([FieldProblem("days", f"1 to {MAX_DAYS}")], "query")
    today = service.clock.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    q = sa.select(alerts.c.created_at).where(
        alerts.c.created_at >= datetime.combine(first, time(0), tzinfo=UTC))
    if principal.is_person:
        q = q.where(sa.or_(alerts.c.principal_id.is_(None),
                           alerts.c.principal_id != principal.id))
    counts = {first + timedelta(days=i): 0 for i in range(days)}
    with service.db.read() as conn:
        for (created,) in conn.execute(q):
            day = (created if created.tzinfo else created.replace(tzinfo=UTC)) \
                .astimezone(UTC).date()
            if day in counts:
                counts[day] += 1
    return sorted(counts.items())
