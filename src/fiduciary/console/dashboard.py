"""The console's first page: a few counts per role, each from the service that owns them —
open DSRs by due band, open alerts by severity, open incidents with their nearest deadline,
failing controls — and two small charts where a trend says more than a table."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response

from fiduciary.compliance.model import Status
from fiduciary.console import charts
from fiduciary.console.pages import DUE_SOON, ConsolePage, Rt, page, signed_in
from fiduciary.console.security import nearest_obligation
from fiduciary.monitoring import trends
from fiduciary.monitoring.alerts import AlertStatus
from fiduciary.principal import Permission
from fiduciary.privacy import dsr_trends

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)
#: Open incidents listed on the card, nearest deadline first.
INCIDENTS_SHOWN = 5


@router.get("/")
def dashboard(request: Request, rt: Rt) -> Response:
    s = signed_in(rt, request)
    who, now = s.who, rt.clock.now()
    cards: dict[str, Any] = {}
    if who.can(Permission.PRIVACY_MANAGE):
        cards["dsr"] = rt.dsr.due_counts(who, DUE_SOON)
    if who.can(Permission.ALERTS_READ) or who.can(Permission.ALERTS_MANAGE):
        cards["alerts"] = Counter(a["severity"] for a in rt.alerts.list_alerts(
            who, status=AlertStatus.OPEN))
    if who.can(Permission.INCIDENTS_READ) or who.can(Permission.INCIDENTS_MANAGE):
        rows = [(i, nearest_obligation(i, now)) for i in rt.incidents.list_incidents(who)
                if i["status"] != "closed"]
        # Those with a clock running first, the nearest deadline first.
        rows.sort(key=lambda r: (r[1] is None or r[1][0]["due_at"] is None,
                                 str(r[1][0]["due_at"]) if r[1] else ""))
        cards["incidents"] = {"rows": rows[:INCIDENTS_SHOWN], "open": len(rows)}
    if who.can(Permission.COMPLIANCE_READ):
        latest = rt.posture.latest()
        cards["controls"] = {"failing": sorted(r.control.id for r in latest
                                               if r.outcome.status == Status.FAIL),
                             "total": len(latest)}
    # Trends: alerts per day, DSRs answered on time per month.
    if who.can(Permission.ALERTS_READ) or who.can(Permission.ALERTS_MANAGE):
        cards["alerts_chart"] = charts.alerts_per_day(trends.alerts_per_day(rt.alerts, who))
    if who.can(Permission.PRIVACY_MANAGE) or who.can(Permission.COMPLIANCE_READ):
        cards["dsr_chart"] = charts.on_time_by_month(
            [(m.month, m.due, m.on_time) for m in dsr_trends.on_time_by_month(rt.dsr, who)])
    return page(request, s, "dashboard.html", cards=cards)
