"""The console's compliance pages (see ``pages.NAV`` for their paths and permissions):

- *who saw this customer* — a subject's trail from the audit trail the API reads
  (``GET /v1/audit/events?subject_id=``), each event with a proof the browser checks itself
  (``static/proof.js``) against the signed checkpoint, through :func:`inclusion_proof`;
- *audit search* by principal, action and dates;
- *posture* — controls, their history, the evidence pack;
- *training & reviews* — everyone's training status and the access-review campaigns.

Every read of the trail is audited as the API's is (``audit.read`` naming the query).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from fiduciary.compliance.evidence import Period
from fiduciary.compliance.model import ControlResult, Status
from fiduciary.compliance.posture import summary
from fiduciary.console.pages import ConsolePage, Rt, Signed, page, signed_in
from fiduciary.errors import FieldProblem, InvalidInput, NotFound
from fiduciary.principal import Permission
from fiduciary.runtime import Runtime

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)

#: Events per page of the access log and the audit search.
PAGE_SIZE = 50
#: A control's results shown on its history page.
HISTORY = 100
_STATUS_ORDER = {Status.FAIL: 0, Status.PASS: 1, Status.NOT_APPLICABLE: 2}


def _audited(s: Signed, query: str, **details: Any) -> None:
    """The ``audit.read`` event of a query, as ``api.routes.audit`` records it."""
    audit = s.rt.audit
    audit.append_committed(audit.event(s.who, "audit.read", details={"query": query,
                                                                       **details}))


def _int(request: Request, name: str, problems: list[FieldProblem]) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        problems.append(FieldProblem(name, "a whole number this page gave you"))
        return None
    return int(raw)


def _day(request: Request, name: str, problems: list[FieldProblem]) -> date | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(FieldProblem(name, "a date as YYYY-MM-DD"))
        return None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# -- who saw this customer -------------------------------------------------------------------
@router.get("/compliance/access-log")
def access_log(request: Request, rt: Rt) -> Response:
    """A subject's trail, oldest first: who, when, action, purpose, decision."""
    s = signed_in(rt, request, Permission.AUDIT_READ)
    subject = request.query_params.get("subject", "").strip()
    problems: list[FieldProblem] = []
    cursor = _int(request, "cursor", problems)
    if problems:
        raise InvalidInput.from_problems(problems, "query")
    items: list[dict[str, Any]] = []
    nxt = None
    if subject:
        items, nxt = rt.trail.events(subject_id=subject, limit=PAGE_SIZE, cursor=cursor)
        _audited(s, "events", subject_id=subject)
    return page(request, s, "compliance/access_log.html", subject=subject, items=items,
                next_cursor=nxt, cursor=cursor)


@router.get("/compliance/proof")
def inclusion_proof(request: Request, rt: Rt) -> Response:
    """An event's RFC 9162 inclusion proof in the latest signed checkpoint's tree, with that
    checkpoint, as JSON: what ``GET /v1/audit/proof/inclusion`` and ``/v1/audit/checkpoint``
    return, for ``proof.js`` to check in the browser (and to read without script)."""
    s = signed_in(rt, request, Permission.AUDIT_READ)
    problems: list[FieldProblem] = []
    index = _int(request, "index", problems)
    if index is None and not problems:
        problems.append(FieldProblem("index", "required: the event's leaf index"))
    if problems or index is None:
        raise InvalidInput.from_problems(problems, "query")
    try:
        checkpoint = rt.trail.latest_checkpoint()
    except NotFound:
        checkpoint = None
    if checkpoint is None or index >= checkpoint.size:
        return JSONResponse({"problem": "no signed checkpoint covers this event yet: the "
                             "sequencer signs one within seconds, try again"}, status_code=409)
    proof = rt.trail.inclusion(index, checkpoint.size)
    _audited(s, "checkpoint")
    _audited(s, "proof/inclusion", index=index, size=checkpoint.size)
    return JSONResponse({**proof, "checkpoint": checkpoint.as_dict()})


# -- audit search ------------------------------------------------------------------------------
@router.get("/compliance/audit")
def audit_search(request: Request, rt: Rt) -> Response:
    """Events by principal (a username, or an actor id such as an API key's), action and
    dates (``to`` included), oldest first, a page at a time."""
    s = signed_in(rt, request, Permission.AUDIT_READ)
    q = {k: request.query_params.get(k, "").strip()
         for k in ("principal", "action", "from", "to")}
    problems: list[FieldProblem] = []
    since, until = _day(request, "from", problems), _day(request, "to", problems)
    cursor = _int(request, "cursor", problems)
    if since and until and until < since:
        problems.append(FieldProblem("to", "before from"))
    searched = any(q.values()) or "search" in request.query_params
    if problems:
        return page(request, s, "compliance/audit.html", q=q, items=[], searched=False,
                    problem="The search was not run.", fields=problems, status=422)
    items: list[dict[str, Any]] = []
    nxt = None
    if searched:
        actor = _actor_id(rt, q["principal"]) if q["principal"] else None
        items, nxt = rt.trail.events(
            actor=actor, action=q["action"] or None,
            since=_midnight(since) if since else None,
            until=_midnight(until + timedelta(days=1)) if until else None,
            limit=PAGE_SIZE, cursor=cursor)
        _audited(s, "events", **{k: v for k, v in (("actor", actor),
                                                    ("action", q["action"])) if v})
    return page(request, s, "compliance/audit.html", q=q, items=items, searched=searched,
                next_cursor=nxt, cursor=cursor)


def _actor_id(rt: Runtime, principal: str) -> str:
    """The trail names people by user id: a username becomes its id; anything else (an API
    key's id, ``cli:<operator>``, ``system``) is taken as written."""
    try:
        return rt.users.get(principal).id
    except NotFound:
        return principal


# -- posture -------------------------------------------------------------------------------------
@router.get("/compliance/posture")
def posture(request: Request, rt: Rt) -> Response:
    """Every control's latest result, failing first (a check runs first if none has yet,
    as the posture API does); the evidence-pack form."""
    s = signed_in(rt, request, Permission.COMPLIANCE_READ)
    results = rt.posture.latest() or rt.posture.check(by=s.who)
    ordered = sorted(results, key=lambda r: _STATUS_ORDER[r.status])
    quarter = Period.last_full_quarter(rt.clock.now())
    return page(request, s, "compliance/posture.html", results=ordered,
                summary=summary(results), regulations=_by_regulation(ordered),
                pack_from=quarter.start.date(),
                pack_to=(quarter.end - timedelta(days=1)).date())


def _by_regulation(results: list[ControlResult]) -> list[tuple[str, list[ControlResult]]]:
    """The results under each regulation their sections cite ("NYDFS 500.12" is NYDFS's),
    regulations in alphabetical order, a control under each it serves."""
    grouped: dict[str, list[ControlResult]] = {}
    for r in results:
        for regulation in dict.fromkeys(sec.split(" ")[0] for sec in r.control.sections):
            grouped.setdefault(regulation, []).append(r)
    return sorted(grouped.items())


@router.get("/compliance/posture/{control_id}")
def control_history(request: Request, rt: Rt, control_id: str) -> Response:
    s = signed_in(rt, request, Permission.COMPLIANCE_READ)
    history = rt.posture.history(control_id, HISTORY)
    return page(request, s, "compliance/history.html", control_id=control_id,
                history=history, control=rt.posture.catalogue.get(control_id))


@router.get("/compliance/evidence")
def evidence_pack(request: Request, rt: Rt) -> Response:
    """The evidence pack of a period (default: the last full quarter), the same zip as
    ``GET /v1/compliance/evidence`` from the same service."""
    s = signed_in(rt, request, Permission.COMPLIANCE_READ)
    problems: list[FieldProblem] = []
    first, last = _day(request, "from", problems), _day(request, "to", problems)
    if (first is None) != (last is None) and not problems:
        problems.append(FieldProblem("to" if last is None else "from",
                                     "give both from and to, or neither"))
    if problems:
        raise InvalidInput.from_problems(problems, "query")
    period = Period.parse(f"{first}..{last}") if first is not None else \
        Period.last_full_quarter(rt.clock.now())
    with tempfile.TemporaryDirectory(prefix="fiduciary-evidence-") as tmp:
        name = f"evidence-{period.label}.zip"
        rt.evidence.pack(s.who, period, Path(tmp) / name)
        body = (Path(tmp) / name).read_bytes()
    return Response(body, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


# -- training and reviews ------------------------------------------------------------------------
@router.get("/compliance/workforce")
def workforce(request: Request, rt: Rt) -> Response:
    """Everyone's training by course (``training:read``) and the access-review campaigns'
    progress (``reviews:read``): each part for whoever may read it."""
    s = signed_in(rt, request, Permission.TRAINING_READ, Permission.REVIEWS_READ)
    context: dict[str, Any] = {"training": None, "overview": None}
    if s.who.can(Permission.TRAINING_READ):
        people = rt.training.status(s.who)
        courses = [c.id for c in rt.training.catalogue.courses]
        context["courses"] = courses
        context["training"] = [
            (p, {c["id"]: c for c in p["courses"]}) for p in people]
    if s.who.can(Permission.REVIEWS_READ):
        context["overview"] = rt.campaigns.overview(s.who)
    return page(request, s, "compliance/workforce.html", **context)
