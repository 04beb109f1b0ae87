"""The console's privacy office pages (see ``pages.NAV`` for their paths and permissions):

- a data-subject request (from the queue in ``pages.dsr_queue``): its details, timeline,
  countdown and the workflow steps its state allows, each a form calling the ``DsrService``
  method the API calls; the access package download; the second person a step needs;
- a customer's consent history (``ConsentDesk.read``, as ``GET /v1/subjects/{id}/consents``);
- legal holds: list, add, release (``HoldService``, as ``fiduciary holds``);
- retention: the plan as a dry run as of a date, and the last runs (from the audit trail);
- records of processing (``RopaService.generate``, as ``GET /v1/ropa``), as tables.

The services decide and audit; the routes only pass the signed-in user and render.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fiduciary.audit.events import actor_label
from fiduciary.audit.trail import MAX_EVENTS_PAGE
from fiduciary.console.pages import (
    DUE_SOON,
    ConsolePage,
    Form,
    Rt,
    Signed,
    page,
    refusal,
    signed_in,
)
from fiduciary.errors import FieldProblem, Forbidden, Gone, InvalidInput, NotFound, WorkflowConflict
from fiduciary.principal import Permission, Principal
from fiduciary.privacy.consent import ConsentEntry
from fiduciary.privacy.dsr import (
    ERASURE_TYPES,
    IDENTITY_VERIFIED,
    IN_PROGRESS,
    PACKAGE_TYPES,
    RECEIVED,
    VERIFICATION_METHODS,
    DsrRequest,
)
from fiduciary.privacy.holds import SCOPES

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)

#: Refusals a form shows next to itself (anything else is the error page).
_REFUSED = (InvalidInput, Forbidden, Gone, WorkflowConflict)
#: Retention runs listed, and how far back the trail is searched for them.
LAST_RUNS = 10
_RUNS_SINCE = timedelta(days=400)


# -- data-subject requests ------------------------------------------------------------------
def _steps(req: DsrRequest, who: Principal) -> dict[str, bool]:
    """Which workflow buttons to show: a guide for the page only, the service decides (and
    refuses whatever is posted out of turn)."""
    verified = req.status in (IDENTITY_VERIFIED, IN_PROGRESS)
    return {
        "verify": req.status == RECEIVED,
        "acknowledge": req.is_open and req.acknowledged_at is None,
        "extend": req.is_open and req.extension_reason is None,
        "start": req.status == IDENTITY_VERIFIED,
        "fulfil": verified and not (req.type in ERASURE_TYPES and _is_verifier(req, who)),
        "deny": req.is_open,
        "download": bool((req.result or {}).get("package")) and not _is_verifier(req, who),
    }


def _is_verifier(req: DsrRequest, who: Principal) -> bool:
    return req.verified_by is not None and req.verified_by == actor_label(who)


def _four_eyes(req: DsrRequest) -> list[str]:
    """The steps of this request that need a second person of the privacy office."""
    needs = []
    if req.type in ERASURE_TYPES:
        needs.append("erasing the customer's data (fulfil)")
    if req.type in PACKAGE_TYPES:
        needs.append("releasing the access package (download)")
    return needs


def _request_page(request: Request, s: Signed, request_id: str, status: int = 200,
                  **context: Any) -> Response:
    req = s.rt.dsr.read(s.who, request_id)
    now = s.rt.clock.now()
    return page(request, s, "privacy/dsr.html", status=status, r=req, now=now,
                band=req.band(now, DUE_SOON), left=req.due_at - now, soon=DUE_SOON,
                steps=_steps(req, s.who), four_eyes=_four_eyes(req),
                is_verifier=_is_verifier(req, s.who), methods=VERIFICATION_METHODS,
                consent_purposes=s.rt.dsr.consent.consent_purposes, **context)


@router.get("/privacy/dsr/{request_id}")
def dsr_request(request: Request, rt: Rt, request_id: str) -> Response:
    """As ``GET /v1/dsr/{id}``: the request with its steps (audited ``dsr.read``)."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    return _request_page(request, s, request_id)


def _purposes(raw: str) -> list[str] | None:
    return [p for p in (x.strip() for x in raw.replace(",", " ").split()) if p] or None


#: step -> the service call it makes, with the form's fields (as the API's bodies).
_ACTIONS: dict[str, Callable[[Signed, str, dict[str, str]], DsrRequest]] = {
    "verify": lambda s, i, f: s.rt.dsr.verify(s.who, i, f.get("method", "")),
    "acknowledge": lambda s, i, f: s.rt.dsr.acknowledge(s.who, i),
    "extend": lambda s, i, f: s.rt.dsr.extend(s.who, i, f.get("reason")),
    "start": lambda s, i, f: s.rt.dsr.start(s.who, i),
    "fulfil": lambda s, i, f: s.rt.dsr.fulfil(s.who, i, f.get("note") or None,
                                              _purposes(f.get("purposes", ""))),
    "deny": lambda s, i, f: s.rt.dsr.deny(s.who, i, f.get("reason")),
}


@router.post("/privacy/dsr/{request_id}/{step}")
def dsr_step(request: Request, rt: Rt, request_id: str, step: str, fields: Form) -> Response:
    """One workflow step, as ``POST /v1/dsr/{id}/{step}``; refused, the request's page again
    with the service's reason."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    action = _ACTIONS.get(step)
    if action is None:
        raise NotFound(f"no workflow step {step!r}", code="not_found")
    try:
        action(s, request_id, fields)
    except _REFUSED as exc:
        return _request_page(request, s, request_id, **refusal(exc), form=fields, failed=step)
    return RedirectResponse(f"/console/privacy/dsr/{request_id}", status_code=303)


@router.get("/privacy/dsr/{request_id}/package")
def dsr_package(request: Request, rt: Rt, request_id: str, format: str = "json") -> Response:
    """As ``GET /v1/dsr/{id}/package``: the same bytes, media type and audit event
    (``dsr.package_download``); by a DPO other than the one who verified the identity."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    body, media = rt.dsr.download(s.who, request_id, format)
    name = f"access-{request_id}.{format}"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


# -- consent ---------------------------------------------------------------------------------
@router.get("/privacy/consent")
def consent(request: Request, rt: Rt, subject: str = "") -> Response:
    """A subject-id form, then that subject's consent, as ``GET /v1/subjects/{id}/consents``
    (the same reach rules: an unknown or unreachable subject is not found)."""
    s = signed_in(rt, request, Permission.CONSENT_READ, Permission.PRIVACY_MANAGE)
    subject = subject.strip()
    if not subject:
        return page(request, s, "privacy/consent.html", subject="", history=None)
    try:
        current, history = rt.consent_desk.read(s.who, subject)
    except (NotFound, Gone, InvalidInput) as exc:
        return page(request, s, "privacy/consent.html", subject=subject, history=None,
                    **refusal(exc))
    return page(request, s, "privacy/consent.html", subject=subject,
                current=sorted(current.values(), key=lambda e: e.purpose),
                history=sorted(history, key=_newest_first, reverse=True))


def _newest_first(e: ConsentEntry) -> tuple[datetime, str]:
    return e.recorded_at, e.id


# -- legal holds -----------------------------------------------------------------------------
def _holds_page(request: Request, s: Signed, status: int = 200, **context: Any) -> Response:
    holds = s.rt.holds.list(include_released=True)
    me = s.who.username or s.who.id  # how the service names who placed a hold
    return page(request, s, "privacy/holds.html", status=status, scopes=SCOPES, me=me,
                active=[h for h in holds if h.active],
                released=[h for h in reversed(holds) if not h.active], **context)


@router.get("/privacy/holds")
def holds(request: Request, rt: Rt) -> Response:
    """Active holds (each with who may release it) and released ones."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    return _holds_page(request, s)


@router.post("/privacy/holds")
def add_hold(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``fiduciary holds add``: a subject, record or collection, with reason and owner."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    try:
        rt.holds.add(s.who, fields.get("scope", ""), fields.get("target", "").strip(),
                     fields.get("reason", ""), fields.get("owner", ""))
    except InvalidInput as exc:
        return _holds_page(request, s, **refusal(exc), form=fields)
    return RedirectResponse("/console/privacy/holds", status_code=303)


@router.post("/privacy/holds/{hold_id}/release")
def release_hold(request: Request, rt: Rt, hold_id: str) -> Response:
    """As ``fiduciary holds release``: by someone other than who placed the hold."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    try:
        rt.holds.release(s.who, hold_id)
    except Forbidden as exc:
        return _holds_page(request, s, **refusal(exc))
    return RedirectResponse("/console/privacy/holds", status_code=303)


# -- retention -------------------------------------------------------------------------------
@router.get("/privacy/retention")
def retention(request: Request, rt: Rt, as_of: str = "") -> Response:
    """With a date: the retention plan as of that day, a dry run (``retention.plan`` in the
    trail, nothing purged); and the last runs, from their ``retention.run`` events."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    today = rt.clock.now().date()
    context: dict[str, Any] = {"as_of": as_of.strip() or today.isoformat(), "plan": None,
                               "runs": _last_runs(s)}
    if as_of.strip():
        try:
            day = date.fromisoformat(as_of.strip())
        except ValueError:
            return page(request, s, "privacy/retention.html", status=422, **context,
                        problem="The plan was not computed.",
                        fields=[FieldProblem("as_of", "a date, YYYY-MM-DD")])
        context["plan"] = rt.retention.run(s.who, day, dry_run=True).as_dict()
    return page(request, s, "privacy/retention.html", **context)


def _last_runs(s: Signed) -> list[dict[str, Any]] | None:
    """The latest runs' summaries, newest first; None without ``audit:read`` (they are
    read from the trail, and the read is audited as the API's)."""
    if not s.who.can(Permission.AUDIT_READ):
        return None
    rt = s.rt
    items, _ = rt.trail.events(action="retention.run", since=rt.clock.now() - _RUNS_SINCE,
                               limit=MAX_EVENTS_PAGE)
    rt.audit.append_committed(rt.audit.event(s.who, "audit.read", details={
        "query": "events", "action": "retention.run"}))
    return [i["event"] for i in reversed(items[-LAST_RUNS:])]


# -- records of processing -------------------------------------------------------------------
@router.get("/privacy/ropa")
def ropa(request: Request, rt: Rt) -> Response:
    """As ``GET /v1/ropa``: the register the service generates (audited
    ``ropa.generated``), as tables."""
    s = signed_in(rt, request, Permission.CONFIG_READ)
    return page(request, s, "privacy/ropa.html", doc=rt.ropa.generate(s.who, "json"))
