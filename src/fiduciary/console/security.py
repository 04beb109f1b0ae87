"""The console's security pages: the alerts queue and an alert's evidence and triage, the
incident register with its obligation clocks, scope and letters, the break-glass review
queue, and the watch list with the suppressions in force.

Each route calls the service the API route calls (``api/routes/alerts.py``, ``incidents.py``,
``break_glass.py``) with the signed-in principal: the services check the permissions and the
separation-of-duties rules (nobody triages an alert about themselves or reviews their own
grant), name each rejected field and audit every read and change. Forms that change something
are shown to the roles the service lets change it; a refused one is shown again with the
service's message and status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fiduciary.console.pages import ConsolePage, Form, Rt, Signed, _status, page, refusal, signed_in
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    WorkflowConflict,
)
from fiduciary.incidents.register import KINDS, SEVERITIES, STATUSES
from fiduciary.monitoring.alerts import (
    ALERT_DETECTIONS,
    MAX_SUPPRESSION_DAYS,
    WATCH_CATEGORIES,
    AlertStatus,
)
from fiduciary.monitoring.pack import DETECTION_IDS, Severity
from fiduciary.principal import Permission

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)

P = Permission
#: Newest alerts one queue page asks the service for (severity and assignee are narrowed
#: here, over that page: the service filters by status, detection and principal).
QUEUE_LIMIT = 200
#: An obligation due within this long is amber on the incident page.
DUE_AMBER = timedelta(hours=24)
_REFUSED = (InvalidInput, Forbidden, NotFound, WorkflowConflict)
_ALERT_ACTIONS = ("assign", "comment", "dismiss", "escalate")


def _submit(step: Callable[[], object], done: str, again: Callable[..., Response],
            form: dict[str, Any]) -> Response:
    """POST/redirect/GET: runs the service call, then goes to ``done``; a refusal shows the
    page again (``again``) with the service's message, its status and what was typed."""
    try:
        step()
    except _REFUSED as exc:
        return again(form=form, **refusal(exc))
    return RedirectResponse(done, status_code=303)


def _instant(raw: str) -> datetime | str | None:
    """A date-time typed in a form (``datetime-local``: UTC on these pages); left as typed
    when it is not one, for the service to name the field."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _names(raw: str) -> list[str]:
    """Usernames or ids typed one per line, or separated by commas or spaces."""
    return raw.replace(",", " ").split()


def _at(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _span(delta: timedelta) -> str:
    """A duration as a person reads a countdown: ``2 d 5 h``, ``5 h 12 min``, ``12 min``."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


def obligation_clock(o: dict[str, Any], now: datetime) -> tuple[str, str]:
    """An obligation's band and countdown: ``overdue`` (red), ``soon`` (amber: due within
    24 h), ``later``, ``open`` (no fixed deadline), or ``done`` (filed or not required)."""
    if o["status"] != "due":
        return "done", o["status"].replace("_", " ")
    due = _at(o["due_at"])
    if due is None:
        return "open", "no fixed deadline"
    if o["overdue"]:
        return "overdue", f"overdue by {_span(now - due)}"
    return ("soon" if due - now < DUE_AMBER else "later"), f"{_span(due - now)} left"


# -- alerts ------------------------------------------------------------------------------------
@router.get("/security/alerts")
def alerts_queue(request: Request, rt: Rt) -> Response:
    """Newest first, filtered by status, severity, detection, principal and assignee."""
    s = signed_in(rt, request, P.ALERTS_READ, P.ALERTS_MANAGE)
    q = {k: request.query_params.get(k, "").strip()
         for k in ("status", "severity", "detection", "principal", "assignee")}
    context: dict[str, Any] = {"q": q, "statuses": list(AlertStatus),
                               "severities": list(Severity),
                               "detections": sorted(ALERT_DETECTIONS), "items": []}
    problems = [] if not q["severity"] or q["severity"] in set(Severity) else [
        FieldProblem("severity", f"one of {', '.join(Severity)}")]
    try:
        items = rt.alerts.list_alerts(s.who, status=q["status"] or None,
                                      detection=q["detection"] or None,
                                      username=q["principal"] or None, limit=QUEUE_LIMIT)
    except InvalidInput as exc:
        problems = exc.fields + problems
    if problems:
        refused = InvalidInput.from_problems(problems, what="query")
        return page(request, s, "security/alerts.html", **context, **refusal(refused))
    context["truncated"] = len(items) == QUEUE_LIMIT
    context["items"] = [a for a in items
                        if (not q["severity"] or a["severity"] == q["severity"])
                        and (not q["assignee"] or a["assignee"] == q["assignee"])]
    return page(request, s, "security/alerts.html", **context)


def _alert_page(request: Request, s: Signed, alert_id: str, status: int = 200,
                **context: Any) -> Response:
    rt, who = s.rt, s.who
    alert = rt.alerts.get(who, alert_id)
    is_open = alert["status"] not in (AlertStatus.DISMISSED, AlertStatus.ESCALATED)
    can_escalate = is_open and who.can(P.ALERTS_MANAGE) and who.can(P.INCIDENTS_MANAGE)
    open_incidents = [i for i in rt.incidents.list_incidents(who) if i["status"] != "closed"
                      ] if can_escalate else []
    return page(request, s, "security/alert.html", status=status, alert=alert,
                is_open=is_open, can_triage=who.can(P.ALERTS_MANAGE),
                can_escalate=can_escalate, open_incidents=open_incidents,
                proof_links=who.can(P.AUDIT_READ), form=context.pop("form", {}), **context)


@router.get("/security/alerts/{alert_id}")
def alert_detail(request: Request, rt: Rt, alert_id: str) -> Response:
    """Reason, score, the evidence events with their inclusion proofs, the triage so far
    and, for ``alerts:manage``, the triage forms."""
    s = signed_in(rt, request, P.ALERTS_READ, P.ALERTS_MANAGE)
    return _alert_page(request, s, alert_id)


@router.post("/security/alerts/{alert_id}/{action}")
def triage_alert(request: Request, rt: Rt, alert_id: str, action: str, fields: Form
                 ) -> Response:
    """As ``POST /v1/alerts/{id}/assign|comments|dismiss|escalate``: the service refuses a
    dismissal without an explanation and any triage of an alert about oneself."""
    s = signed_in(rt, request, P.ALERTS_MANAGE)
    if action not in _ALERT_ACTIONS:
        raise NotFound(f"no alert action {action!r}", code="not_found")
    done = f"/console/security/alerts/{quote(alert_id, safe='')}"
    try:
        if action == "assign":
            rt.alerts.assign(s.who, alert_id, fields.get("username", ""))
        elif action == "comment":
            rt.alerts.comment(s.who, alert_id, fields.get("text", ""))
        elif action == "dismiss":
            rt.alerts.dismiss(s.who, alert_id, fields.get("explanation", ""))
        else:
            incident = rt.incidents.escalate_alert(s.who, alert_id,
                                                   fields.get("note") or None,
                                                   fields.get("incident_id") or None)
            done = f"/console/security/incidents/{quote(str(incident['id']), safe='')}"
    except _REFUSED as exc:
        return _alert_page(request, s, alert_id, form={action: fields}, **refusal(exc))
    return RedirectResponse(done, status_code=303)


# -- incidents ---------------------------------------------------------------------------------
def nearest_obligation(incident: dict[str, Any], now: datetime
                       ) -> tuple[dict[str, Any], str, str] | None:
    """The incident's first obligation still due (the service sorts soonest first)."""
    due = [o for o in incident["obligations"] if o["status"] == "due"]
    return (due[0], *obligation_clock(due[0], now)) if due else None


def _incidents_page(request: Request, s: Signed, status: int = 200, **context: Any
                    ) -> Response:
    q = {k: request.query_params.get(k, "").strip() for k in ("status", "overdue")}
    now = s.rt.clock.now()
    try:
        items = s.rt.incidents.list_incidents(s.who, overdue=q["overdue"] == "1",
                                              status=q["status"] or None)
    except InvalidInput as exc:  # a status that is not one: said, and nothing listed
        items, status, context = [], _status(exc), {**context, **refusal(exc)}
    context["status"] = status
    return page(request, s, "security/incidents.html",
                rows=[(i, nearest_obligation(i, now)) for i in items],
                q=q, statuses=STATUSES, kinds=KINDS, severities=SEVERITIES,
                can_manage=s.who.can(P.INCIDENTS_MANAGE), form=context.pop("form", {}),
                **context)


@router.get("/security/incidents")
def incidents_list(request: Request, rt: Rt) -> Response:
    """Most recently discovered first, each with its nearest deadline."""
    return _incidents_page(request, signed_in(rt, request, P.INCIDENTS_READ,
                                              P.INCIDENTS_MANAGE))


@router.post("/security/incidents")
def open_incident(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/incidents``: the obligations that need no scope start their clocks."""
    s = signed_in(rt, request, P.INCIDENTS_MANAGE)
    body: dict[str, Any] = {k: fields.get(k, "") for k in ("title", "kind", "severity")}
    for name in ("discovered_at", "determined_at"):
        body[name] = _instant(fields.get(name, ""))
    if fields.get("description", "").strip():
        body["description"] = fields["description"]
    try:
        made = rt.incidents.create(s.who, {k: v for k, v in body.items() if v is not None})
    except _REFUSED as exc:
        return _incidents_page(request, s, form=fields, **refusal(exc))
    return RedirectResponse(f"/console/security/incidents/{made['id']}", status_code=303)


def _incident_page(request: Request, s: Signed, incident_id: str, status: int = 200,
                   **context: Any) -> Response:
    rt, who = s.rt, s.who
    incident = rt.incidents.get(who, incident_id)
    now = rt.clock.now()
    clocks = [(o, *obligation_clock(o, now)) for o in incident["obligations"]]
    later = STATUSES[STATUSES.index(incident["status"]) + 1:]
    return page(request, s, "security/incident.html", status=status, incident=incident,
                clocks=clocks, now=now, next_statuses=later,
                batches=rt.letters.batches(who, incident_id),
                can_manage=who.can(P.INCIDENTS_MANAGE) and incident["status"] != "closed",
                collections=sorted(rt.datamap.collections), form=context.pop("form", {}),
                **context)


@router.get("/security/incidents/{incident_id}")
def incident_detail(request: Request, rt: Rt, incident_id: str) -> Response:
    """Facts, the obligation clocks per regulator, the scope by jurisdiction, the letter
    batches, escalated alerts, the timeline; for ``incidents:manage`` the forms."""
    s = signed_in(rt, request, P.INCIDENTS_READ, P.INCIDENTS_MANAGE)
    return _incident_page(request, s, incident_id)


def _run_incident_step(request: Request, s: Signed, incident_id: str, form: str,
                       fields: dict[str, str], step: Callable[[], object]) -> Response:
    """Runs one incident step; back to the incident, or its page with the refusal."""
    return _submit(step, f"/console/security/incidents/{quote(incident_id, safe='')}",
                   partial(_incident_page, request, s, incident_id), {form: fields})


@router.post("/security/incidents/{incident_id}/status")
def incident_status(request: Request, rt: Rt, incident_id: str, fields: Form) -> Response:
    """As ``POST /v1/incidents/{id}/status``: forward only; closing needs every obligation
    decided (the service says which are not)."""
    s = signed_in(rt, request, P.INCIDENTS_MANAGE)
    return _run_incident_step(request, s, incident_id, "status", fields, lambda: (
        rt.incidents.transition(s.who, incident_id, fields.get("status", ""),
                                fields.get("note") or None)))


@router.post("/security/incidents/{incident_id}/facts")
def incident_facts(request: Request, rt: Rt, incident_id: str, fields: Form) -> Response:
    """As ``POST /v1/incidents/{id}/facts``: when it was determined, or an extortion paid;
    the clocks follow."""
    s = signed_in(rt, request, P.INCIDENTS_MANAGE)
    body = {k: _instant(fields.get(k, "")) for k in ("determined_at", "extortion_paid_at")}
    return _run_incident_step(request, s, incident_id, "facts", fields, lambda: (
        rt.incidents.update_facts(s.who, incident_id,
                                  {k: v for k, v in body.items() if v is not None})))


@router.post("/security/incidents/{incident_id}/scope")
def incident_scope(request: Request, rt: Rt, incident_id: str, fields: Form) -> Response:
    """As ``POST /v1/incidents/{id}/scope``: whose data was exposed, from the audit trail up
    to a newly signed checkpoint; the obligations are derived again."""
    s = signed_in(rt, request, P.INCIDENTS_MANAGE)
    principals = [{"kind": "user", "username": u} for u in _names(fields.get("usernames", ""))]
    principals += [{"kind": "api_key", "id": k} for k in _names(fields.get("api_keys", ""))]
    body: dict[str, Any] = {"principals": principals, "from": _instant(fields.get("from", "")),
                            "to": _instant(fields.get("to", "")),
                            "keys_compromised": fields.get("keys_compromised") == "on"}
    if _names(fields.get("collections", "")):
        body["collections"] = _names(fields["collections"])
    return _run_incident_step(request, s, incident_id, "scope", fields, lambda: (
        rt.incidents.scope(s.who, incident_id, body)))


@router.post("/security/incidents/{incident_id}/obligations/{obligation_id}/{decision}")
def decide_obligation(request: Request, rt: Rt, incident_id: str, obligation_id: str,
                      decision: str, fields: Form) -> Response:
    """As ``POST …/obligations/{id}/file`` (the recipient's reference) and
    ``…/not-required`` (the reason, required)."""
    s = signed_in(rt, request, P.INCIDENTS_MANAGE)
    if decision == "file":
        return _run_incident_step(request, s, incident_id, obligation_id, fields, lambda: (
            rt.incidents.file(s.who, incident_id, obligation_id, fields.get("reference", ""),
                              _instant(fields.get("filed_at", "")))))
    if decision == "not-required":
        return _run_incident_step(request, s, incident_id, obligation_id, fields, lambda: (
            rt.incidents.not_required(s.who, incident_id, obligation_id,
                                      fields.get("reason", ""))))
    raise NotFound(f"no obligation decision {decision!r}", code="not_found")


# -- break-glass review ------------------------------------------------------------------------
def _break_glass_page(request: Request, s: Signed, status: int = 200, **context: Any
                      ) -> Response:
    show_all = request.query_params.get("all") == "1"
    names = {u.id: u.username for u in s.rt.users.all()}
    # The justification stays out, as in the API: free text that may name the customer.
    grants = s.rt.users.break_glass_grants(pending_only=not show_all)
    return page(request, s, "security/break_glass.html", status=status, grants=grants,
                names=names, show_all=show_all, form=context.pop("form", {}), **context)


@router.get("/security/break-glass")
def break_glass_queue(request: Request, rt: Rt) -> Response:
    """Grants awaiting review (``?all=1``: reviewed ones too), oldest first."""
    return _break_glass_page(request, signed_in(rt, request, P.AUDIT_READ))


@router.post("/security/break-glass/{grant_id}")
def review_break_glass(request: Request, rt: Rt, grant_id: str, fields: Form) -> Response:
    """As ``POST /v1/break-glass/reviews/{id}``: justified or not; never by the requester."""
    s = signed_in(rt, request, P.AUDIT_READ)
    return _submit(lambda: rt.users.review_break_glass(
        s.who, grant_id, fields.get("outcome", ""), fields.get("note") or None),
        "/console/security/break-glass", partial(_break_glass_page, request, s),
        {grant_id: fields})


# -- watch list and suppressions ---------------------------------------------------------------
def _watchlist_page(request: Request, s: Signed, status: int = 200, **context: Any
                    ) -> Response:
    rt = s.rt
    return page(request, s, "security/watchlist.html", status=status,
                watched=rt.alerts.watchlist(s.who), suppressions=rt.alerts.suppressions(s.who),
                categories=WATCH_CATEGORIES, detections=DETECTION_IDS,
                max_days=MAX_SUPPRESSION_DAYS, can_manage=s.who.can(P.ALERTS_MANAGE),
                form=context.pop("form", {}), **context)


@router.get("/security/watchlist")
def watchlist(request: Request, rt: Rt) -> Response:
    """The watched customers (by id) with their handlers and reason; the suppressions in
    force until their expiry."""
    return _watchlist_page(request, signed_in(rt, request, P.ALERTS_READ, P.ALERTS_MANAGE))


def _run_watch_step(request: Request, s: Signed, form: str, fields: dict[str, str],
                    step: Callable[[], object]) -> Response:
    return _submit(step, "/console/security/watchlist", partial(_watchlist_page, request, s),
                   {form: fields})


@router.post("/security/watchlist")
def watch_subject(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/monitoring/watchlist``: replaces the subject's entry if it has one."""
    s = signed_in(rt, request, P.ALERTS_MANAGE)
    return _run_watch_step(request, s, "watch", fields, lambda: rt.alerts.watch(
        s.who, fields.get("subject_id", "").strip(), fields.get("reason", ""),
        fields.get("category", "other"), _names(fields.get("handlers", ""))))


@router.post("/security/watchlist/{subject_id}/remove")
def unwatch_subject(request: Request, rt: Rt, subject_id: str) -> Response:
    """As ``DELETE /v1/monitoring/watchlist/{subject_id}``."""
    s = signed_in(rt, request, P.ALERTS_MANAGE)
    return _run_watch_step(request, s, "unwatch", {}, lambda: rt.alerts.unwatch(
        s.who, subject_id))


@router.post("/security/suppressions")
def suppress(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/monitoring/suppressions``: until a date at most 90 days ahead, with a
    reason; never about oneself. (The service ends a suppression only at its expiry.)"""
    s = signed_in(rt, request, P.ALERTS_MANAGE)
    return _run_watch_step(request, s, "suppress", fields, lambda: rt.alerts.suppress(
        s.who, fields.get("detection", ""), fields.get("reason", ""),
        _instant(fields.get("expires_at", "")), username=fields.get("principal") or None,
        subject_id=fields.get("subject_id", "").strip() or None))

