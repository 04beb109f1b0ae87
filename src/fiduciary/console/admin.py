"""The console's administration pages: users, API keys, approvals, access reviews, the HR feed
and key status (see ``pages.NAV`` for their paths and permissions).

Each route calls the service the API route calls (``api.routes.admin`` and ``reviews``), with
the signed-in principal; the services decide. Granting customer data stays a proposal until a
different person approves it, exactly as through the API; and, as through the API, nobody
here ever sees a user's enrolment code (the operator issues it to the user, ``fiduciary users
enrolment-code``): whoever held it could enrol as the new user and take the access a second
person approved. A new API key's secret is shown once, on the answer to the form that made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fiduciary.access.approvals import PENDING, Approval
from fiduciary.access.policy import ACTIONS
from fiduciary.console.pages import (
    ConsolePage,
    FormPairs,
    Rt,
    Signed,
    page,
    refusal,
    signed_in,
)
from fiduciary.errors import FieldProblem, Forbidden, InvalidInput, NotFound, WorkflowConflict
from fiduciary.principal import Permission, Principal
from fiduciary.runtime import Runtime
from fiduciary.workforce.reviews import NOTE_LIMIT, ReviewItem

router = APIRouter(prefix="/console/admin", route_class=ConsolePage, include_in_schema=False)

P = Permission
#: Who reads the approvals (as ``GET /v1/admin/approvals``); deciding needs approvals:decide.
APPROVAL_READERS = (P.APPROVALS_DECIDE, P.USERS_MANAGE, P.APIKEYS_MANAGE)
_REFUSED = (InvalidInput, Forbidden, NotFound, WorkflowConflict)


def _one(fields: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in reversed(fields) if k == name), "").strip()


def _many(fields: list[tuple[str, str]], name: str) -> list[str]:
    return [v.strip() for k, v in fields if k == name and v.strip()]


def _listed(rt: Runtime, who: Principal, what: str) -> None:
    """Reading the list of accounts is an admin action, audited as the API's."""
    rt.audit.append_committed(rt.audit.event(who, "admin.list", details={"what": what}))


def _done(path: str, **query: str) -> Response:
    """POST/redirect/GET: the page that shows what the form did."""
    return RedirectResponse(f"{path}?{urlencode(query)}", status_code=303)


def _roles(rt: Runtime) -> list[dict[str, Any]]:
    """Every role of the pack, and whether granting it needs a second person's approval."""
    sensitive = set(rt.approvals.sensitive(list(rt.policy.pack.roles)))
    return [{"name": r.name, "description": r.description, "approval": r.name in sensitive}
            for r in rt.policy.pack.roles.values()]


# -- users ---------------------------------------------------------------------------------------
def _users_page(request: Request, s: Signed, status: int = 200, **context: Any) -> Response:
    rt = s.rt
    users = rt.users.all()
    _listed(rt, s.who, "users")
    pending = [a for a in rt.approvals.list(PENDING) if a.kind.startswith("user.")]
    notice = _notice(rt, request)
    return page(request, s, "admin/users.html", status=status, users=users,
                pending={a.target: a for a in pending}, roles=_roles(rt), notice=notice,
                form=context.pop("form", {}), **context)


def _notice(rt: Runtime, request: Request) -> dict[str, Any] | None:
    """What the last form did, from the redirect's query (a proposal is looked up again, so
    the page shows its current state: still waiting, approved or rejected)."""
    q = request.query_params
    if q.get("proposed"):
        try:
            return {"approval": rt.approvals.get(q["proposed"])}
        except NotFound:
            return None
    for what in ("created", "changed", "disabled", "revoked", "decided"):
        if q.get(what):
            return {what: q[what]}
    return None


@router.get("/users")
def users_page(request: Request, rt: Rt) -> Response:
    s = signed_in(rt, request, P.USERS_MANAGE)
    return _users_page(request, s)


@router.post("/users")
def create_user(request: Request, rt: Rt, fields: FormPairs) -> Response:
    """As ``POST /v1/admin/users``: in force at once unless a role reaches customer data
    (then a proposal another person approves). No enrolment code is shown to anyone here."""
    s = signed_in(rt, request, P.USERS_MANAGE)
    username, roles = _one(fields, "username"), _many(fields, "role")
    regions = [r.strip() for r in _one(fields, "regions").split(",") if r.strip()]
    try:
        outcome = rt.approvals.request_user(s.who, username, roles, regions)
    except _REFUSED as exc:
        return _users_page(request, s, **refusal(exc),
                           form={"username": username, "roles": roles,
                                 "regions": ", ".join(regions)})
    if outcome.approval is not None:
        return _done("/console/admin/users", proposed=outcome.approval.id)
    return _done("/console/admin/users", created=username)


@router.get("/users/{username}")
def user_page(request: Request, rt: Rt, username: str) -> Response:
    return _user_page(request, signed_in(rt, request, P.USERS_MANAGE), username)


def _user_page(request: Request, s: Signed, username: str, status: int = 200,
               **context: Any) -> Response:
    rt = s.rt
    user = rt.users.get(username)
    _listed(rt, s.who, "user")
    pending = [a for a in rt.approvals.list(PENDING)
               if a.kind.startswith("user.") and a.target == username]
    return page(request, s, "admin/user.html", status=status, user=user, pending=pending,
                roles=_roles(rt), notice=_notice(rt, request), **context)


@router.post("/users/{username}/roles")
def set_roles(request: Request, rt: Rt, username: str, fields: FormPairs) -> Response:
    """As ``PUT /v1/admin/users/{u}/roles``: a role reaching customer data added is a
    proposal; the service refuses nothing less for one's own account."""
    s = signed_in(rt, request, P.USERS_MANAGE)
    try:
        outcome = rt.approvals.request_roles(s.who, username, _many(fields, "role"))
    except (InvalidInput, WorkflowConflict) as exc:
        return _user_page(request, s, username, **refusal(exc))
    path = f"/console/admin/users/{username}"
    if outcome.approval is not None:
        return _done(path, proposed=outcome.approval.id)
    return _done(path, changed=username)


@router.post("/users/{username}/disable")
def disable_user(request: Request, rt: Rt, username: str) -> Response:
    """Ends the user's sessions at once (as ``POST /v1/admin/users/{u}/disable``)."""
    s = signed_in(rt, request, P.USERS_MANAGE)
    rt.users.set_disabled(username, True, by=s.who)
    return _done(f"/console/admin/users/{username}", disabled=username)


@router.post("/users/{username}/re-enrol")
def re_enrol_user(request: Request, rt: Rt, username: str) -> Response:
    """Always a proposal: once approved the user's password, TOTP and sessions end."""
    s = signed_in(rt, request, P.USERS_MANAGE)
    try:
        outcome = rt.approvals.request_re_enrol(s.who, username)
    except InvalidInput as exc:
        return _user_page(request, s, username, **refusal(exc))
    assert outcome.approval is not None
    return _done(f"/console/admin/users/{username}", proposed=outcome.approval.id)


# -- API keys ------------------------------------------------------------------------------------
def _keys_page(request: Request, s: Signed, status: int = 200, **context: Any) -> Response:
    rt = s.rt
    now = rt.clock.now()
    keys = [(k, k.state(now)) for k in rt.api_keys.all()]
    _listed(rt, s.who, "apikeys")
    return page(request, s, "admin/api_keys.html", status=status, keys=keys, roles=_roles(rt),
                scopes=ACTIONS, max_days=rt.api_keys.max_days,
                default_days=rt.api_keys.default_days, notice=_notice(rt, request),
                form=context.pop("form", {}), **context)


@router.get("/api-keys")
def api_keys_page(request: Request, rt: Rt) -> Response:
    return _keys_page(request, signed_in(rt, request, P.APIKEYS_MANAGE))


def _days(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise InvalidInput.from_problems([FieldProblem("days", "a whole number of days")],
                                         "API key")
    return int(text)


@router.post("/api-keys")
def create_api_key(request: Request, rt: Rt, fields: FormPairs) -> Response:
    """As ``POST /v1/admin/apikeys``: the secret is on this answer and nowhere else (a key
    with a data role authenticates once another person approves it)."""
    s = signed_in(rt, request, P.APIKEYS_MANAGE)
    name, role = _one(fields, "name"), _one(fields, "role")
    scopes = _many(fields, "scope") or None
    try:
        outcome = rt.approvals.request_api_key(s.who, name, role, _days(_one(fields, "days")),
                                               scopes)
    except _REFUSED as exc:
        return _keys_page(request, s, **refusal(exc),
                          form={"name": name, "role": role, "scopes": scopes or [],
                                "days": _one(fields, "days")})
    return page(request, s, "admin/api_key_created.html", key=outcome.key,
                secret=outcome.token, approval=outcome.approval)


@router.post("/api-keys/{key_id}/revoke")
def revoke_api_key(request: Request, rt: Rt, key_id: str) -> Response:
    s = signed_in(rt, request, P.APIKEYS_MANAGE)
    rt.api_keys.revoke(key_id, by=s.who)
    return _done("/console/admin/api-keys", revoked=key_id)


# -- approvals -----------------------------------------------------------------------------------
def _about_me(a: Approval, who: Principal) -> bool:
    """A proposal this person may not decide: theirs, or a change to their own access (the
    service refuses both; the page lists them apart instead of offering a button)."""
    return a.proposed_by["id"] == who.id or (a.kind.startswith("user.")
                                             and a.target == who.username)


@router.get("/approvals")
def approvals_page(request: Request, rt: Rt) -> Response:
    s = signed_in(rt, request, *APPROVAL_READERS)
    every = rt.approvals.list()
    _listed(rt, s.who, "approvals")
    pending = [a for a in every if a.status == PENDING]
    decider = s.who.can(P.APPROVALS_DECIDE)
    return page(request, s, "admin/approvals.html", decider=decider,
                to_decide=[a for a in pending if decider and not _about_me(a, s.who)],
                waiting=[a for a in pending if not decider or _about_me(a, s.who)],
                decided=[a for a in reversed(every) if a.status != PENDING][:20],
                notice=_notice(rt, request), note_limit=2000)


@router.post("/approvals/{approval_id}/{verdict}")
def decide(request: Request, rt: Rt, approval_id: str, verdict: str, fields: FormPairs
           ) -> Response:
    """As ``POST /v1/admin/approvals/{id}/approve|reject``: a person holding
    approvals:decide other than the proposer and the user whose access changes."""
    s = signed_in(rt, request, P.APPROVALS_DECIDE)
    act = {"approve": rt.approvals.approve, "reject": rt.approvals.reject}.get(verdict)
    if act is None:
        raise NotFound("no such decision", code="not_found")
    act(s.who, approval_id, _one(fields, "note") or None)
    return _done("/console/admin/approvals", decided=approval_id)


# -- access reviews ------------------------------------------------------------------------------
def _mine(item: ReviewItem, who: Principal) -> bool:
    """An item assigned to this reviewer (a reviews:read holder is shown every item by the
    service; their own to decide are these)."""
    return item.account_id != who.id and (
        item.reviewer_id == who.id
        or (item.reviewer_id is None and item.reviewer_role in who.roles))


def _reviews_page(request: Request, s: Signed, status: int = 200, **context: Any
                  ) -> Response:
    overview = s.rt.campaigns.overview(s.who)
    reader = s.who.can(P.REVIEWS_READ) or s.who.can(P.REVIEWS_MANAGE)
    return page(request, s, "admin/reviews.html", status=status, reader=reader,
                items=[i for i in overview.items if _mine(i, s.who)] if reader
                else overview.items,
                campaigns=overview.campaigns if reader else [],
                uncertified=overview.uncertified, note_limit=NOTE_LIMIT,
                notice=_notice(s.rt, request), **context)


@router.get("/reviews")
def reviews_page(request: Request, rt: Rt) -> Response:
    return _reviews_page(request, signed_in(rt, request))


@router.post("/reviews/{campaign_id}/items/{item_id}/decide")
def decide_review_item(request: Request, rt: Rt, campaign_id: str, item_id: str,
                       fields: FormPairs) -> Response:
    """Keep or revoke (a reason required to revoke), as
    ``POST /v1/reviews/{c}/items/{i}/decide``; a revocation takes effect at once."""
    s = signed_in(rt, request)
    try:
        rt.campaigns.decide(s.who, campaign_id, item_id, _one(fields, "decision"),
                            _one(fields, "note") or None)
    except InvalidInput as exc:
        return _reviews_page(request, s, **refusal(exc), failed=item_id)
    return _done("/console/admin/reviews", decided=item_id)


# -- HR feed ---------------------------------------------------------------------------------
@router.get("/hr")
def hr_page(request: Request, rt: Rt) -> Response:
    s = signed_in(rt, request, P.USERS_MANAGE, P.REVIEWS_READ)
    return _hr_page(request, s)


def _hr_page(request: Request, s: Signed, status: int = 200, **context: Any) -> Response:
    return page(request, s, "admin/hr.html", status=status, last=s.rt.hr.last_sync(),
                dormant=s.rt.hr.dormant(), dormant_days=s.rt.hr.dormant_days, **context)


@router.post("/hr/check")
def hr_check(request: Request, rt: Rt, fields: FormPairs) -> Response:
    """A dry run of an HR feed pasted in the form: the leavers it would disable, the movers,
    the rows naming nobody, the accounts it does not name. Nothing is applied (the sync
    itself is the operator's, ``fiduciary users sync-hr``)."""
    s = signed_in(rt, request, P.USERS_MANAGE, P.REVIEWS_READ)
    text = _one(fields, "feed")
    try:
        report = rt.hr.sync_text(text, s.who, dry_run=True)
    except InvalidInput as exc:
        return _hr_page(request, s, **refusal(exc),
                        feed=text)
    return _hr_page(request, s, report=report, feed=text)


# -- key status ----------------------------------------------------------------------------------
@router.get("/keys")
def keys_page(request: Request, rt: Rt) -> Response:
    """KEK versions, the active one's age against the rotation period, and how many subject
    keys are wrapped under the active version (a rotation's progress). Never key material."""
    s = signed_in(rt, request, P.CONFIG_READ)
    now = rt.clock.now()
    counts = rt.vault.keys.counts_by_version()
    active = rt.keyring.active_version()
    versions = []
    for v in rt.keyring.versions():
        created = datetime.fromisoformat(v.created_at)
        versions.append({"version": v.version, "state": v.state, "created_at": created,
                         "age_days": (now - created).days, "wrapped": counts.get(v.version, 0)})
    current = next(v for v in versions if v["version"] == active)
    total = sum(counts.values())
    return page(request, s, "admin/keys.html", versions=versions, active=current,
                rotation_days=rt.settings.kek_rotation_days, total=total,
                rewrapped=counts.get(active, 0),
                percent=round(100 * counts.get(active, 0) / total, 1) if total else 100.0)
