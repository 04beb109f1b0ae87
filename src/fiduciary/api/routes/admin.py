"""Administration: staff users (``users:manage``), API keys (``apikeys:manage``) and the
approvals that give an account customer data (``approvals:decide``). No customer data.

Creating or changing a user or key so that it holds a data role or ``privacy:manage`` is a
proposal (202, ``approval_required``) until a different person approves it; everything else
applies at once. Every action is audited with the acting principal; nobody here ever sees a
user's secrets (the enrolment code goes to the user through the operator).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fiduciary.access.approvals import Approval as StoredApproval
from fiduciary.access.approvals import Outcome
from fiduciary.access.users import User
from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.clock import iso
from fiduciary.errors import Reason
from fiduciary.principal import Permission, Principal

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=documented(401, 403),
                   route_class=OneHopRoute)
UserAdmin = Annotated[Ctx, Depends(requires(Permission.USERS_MANAGE))]
KeyAdmin = Annotated[Ctx, Depends(requires(Permission.APIKEYS_MANAGE))]
ApprovalReader = Annotated[Ctx, Depends(requires(
    Permission.APPROVALS_DECIDE, Permission.USERS_MANAGE, Permission.APIKEYS_MANAGE))]
Approver = Annotated[Ctx, Depends(requires(Permission.APPROVALS_DECIDE))]


class NewUser(BaseModel):
    username: str
    roles: list[str]
    regions: list[str] = []


class UserSummary(BaseModel):
    username: str
    roles: list[str]
    regions: list[str]
    disabled: bool
    enrolled: bool = Field(description="The user has enrolled (password and TOTP)")
    mfa_enrolled: bool
    last_login_at: Timestamp | None

    @classmethod
    def of(cls, u: User) -> UserSummary:
        return cls(username=u.username, roles=list(u.roles), regions=list(u.regions),
                   disabled=u.disabled_at is not None, enrolled=u.enrolled,
                   mfa_enrolled=u.mfa_enrolled_at is not None,
                   last_login_at=iso(u.last_login_at) if u.last_login_at else None)


class UserList(BaseModel):
    items: list[UserSummary]


class CreatedUser(BaseModel):
    """In force; the user enrols with a one-time code the operator hands over (``fiduciary
    users enrolment-code``), never shown here."""

    username: str
    roles: list[str]
    regions: list[str]
    enrolment: str = Field(description="`pending`: the user has still to enrol")


class Proposal(BaseModel):
    """Nothing has changed yet: a different person holding ``approvals:decide`` approves
    (``POST /v1/admin/approvals/{id}/approve``)."""

    approval_id: str
    status: str = Field(description="`pending`")
    reason: str = Field(description="`approval_required`")
    kind: str
    target: str


class Roles(BaseModel):
    roles: list[str]


class DisabledUser(BaseModel):
    username: str
    disabled: bool


class NewApiKey(BaseModel):
    name: str
    role: str = "service"
    scopes: list[str] | None = None
    days: int | None = Field(None, description="Lifetime in days (default and maximum: "
                             "settings `api_key_default_days`, `api_key_max_days`)")


class ApiKeySummary(BaseModel):
    id: str
    name: str
    role: str
    state: str = Field(description="`active`, `pending_approval`, `expired`, `revoked` or "
                       "`holder_disabled` (its holder is disabled: it works again when they "
                       "are enabled)")
    scopes: list[str] | None
    expires_at: Timestamp | None


class ApiKeyList(BaseModel):
    items: list[ApiKeySummary]


class CreatedApiKey(BaseModel):
    """The secret is shown once."""

    id: str
    role: str
    api_key: str
    expires_at: Timestamp


class ProposedApiKey(Proposal):
    """The key exists but does not authenticate until approved; its secret is shown once,
    here."""

    id: str
    role: str
    api_key: str
    expires_at: Timestamp


class Actor(BaseModel):
    kind: str
    id: str
    name: str


class Approval(BaseModel):
    id: str
    kind: str = Field(description="`user.create`, `user.set_roles`, `user.re_enrol` or "
                      "`apikey.create`")
    target: str = Field(description="The username, or the API key's id")
    payload: dict[str, Any] = Field(description="What is to be applied (roles, regions, a "
                                    "key's name, role and scopes)")
    status: str = Field(description="`pending`, `approved` or `rejected`")
    proposed_by: Actor
    proposed_at: Timestamp
    decided_by: Actor | None
    decided_at: Timestamp | None
    note: str | None

    @classmethod
    def of(cls, a: StoredApproval) -> Approval:
        return cls.model_validate(a.as_dict())


class ApprovalList(BaseModel):
    items: list[Approval]


class Decision(BaseModel):
    note: str | None = Field(None, max_length=2000)


_PROPOSED: dict[int | str, dict[str, Any]] = {202: {
    "model": Proposal, "description": "A proposal waiting for approval (`approval_required`)"}}


def _proposal(outcome: Outcome, model: type[Proposal] = Proposal,
              **extra: Any) -> JSONResponse:
    assert outcome.approval is not None
    a = outcome.approval
    body = model(approval_id=a.id, status=a.status, reason=Reason.APPROVAL_REQUIRED,
                 kind=a.kind, target=a.target, **extra)
    return JSONResponse(body.model_dump(), status_code=202)


def _listed(ctx: Ctx, who: Principal, what: str) -> None:
    """Reading the list of accounts is an admin action too."""
    ctx.rt.audit.append_committed(ctx.rt.audit.event(who, "admin.list",
                                                     details={"what": what}))


@router.get("/users")
def list_users(ctx: UserAdmin) -> UserList:
    who = ctx.caller()
    items = [UserSummary.of(u) for u in ctx.rt.users.all()]
    _listed(ctx, who, "users")
    return UserList(items=items)


@router.post("/users", status_code=201, response_model=CreatedUser,
             responses={**_PROPOSED, **documented(422)})
def create_user(body: NewUser, ctx: UserAdmin) -> CreatedUser | JSONResponse:
    """In force at once (201) unless a role reaches customer data (any grant) or holds
    ``privacy:manage``: then a proposal (202). The enrolment code is never returned."""
    outcome = ctx.rt.approvals.request_user(ctx.caller(), body.username, body.roles,
                                            body.regions)
    if outcome.approval is not None:
        return _proposal(outcome)
    assert outcome.user is not None
    u = outcome.user
    return CreatedUser(username=u.username, roles=list(u.roles), regions=list(u.regions),
                       enrolment="pending")


@router.put("/users/{username}/roles", response_model=UserSummary,
            responses={**_PROPOSED, **documented(404, 422)})
def set_user_roles(username: str, body: Roles, ctx: UserAdmin) -> UserSummary | JSONResponse:
    """Replace a user's roles: at once (200) unless a role reaching customer data is added
    (202, a proposal)."""
    outcome = ctx.rt.approvals.request_roles(ctx.caller(), username, body.roles)
    if outcome.approval is not None:
        return _proposal(outcome)
    assert outcome.user is not None
    return UserSummary.of(outcome.user)


@router.post("/users/{username}/re-enrol", status_code=202, responses=documented(404, 422))
def re_enrol_user(username: str, ctx: UserAdmin) -> Proposal:
    """Withdraw the user's password, TOTP and sessions so they enrol again with a new code:
    always a proposal."""
    outcome = ctx.rt.approvals.request_re_enrol(ctx.caller(), username)
    assert outcome.approval is not None
    a = outcome.approval
    return Proposal(approval_id=a.id, status=a.status, reason=Reason.APPROVAL_REQUIRED,
                    kind=a.kind, target=a.target)


@router.post("/users/{username}/disable", responses=documented(404, 422))
def disable_user(username: str, ctx: UserAdmin) -> DisabledUser:
    """Ends the user's sessions; their own API keys stop working until they are enabled again."""
    who = ctx.caller()
    return DisabledUser(username=ctx.rt.users.set_disabled(username, True, by=who).username,
                        disabled=True)


@router.get("/apikeys")
def list_api_keys(ctx: KeyAdmin) -> ApiKeyList:
    who = ctx.caller()
    now = ctx.rt.clock.now()
    items = [ApiKeySummary(
        id=k.id, name=k.name, role=k.role, state=k.state(now),
        scopes=list(k.scopes) if k.scopes else None,
        expires_at=iso(k.expires_at) if k.expires_at else None) for k in ctx.rt.api_keys.all()]
    _listed(ctx, who, "apikeys")
    return ApiKeyList(items=items)


@router.post("/apikeys", status_code=201, response_model=CreatedApiKey,
             responses={202: {"model": ProposedApiKey, "description": "A key with a data "
                              "role: it authenticates once approved (`approval_required`)"},
                        **documented(422)})
def create_api_key(body: NewApiKey, ctx: KeyAdmin) -> CreatedApiKey | JSONResponse:
    """In force at once (201) unless its role reaches customer data or holds
    ``privacy:manage``: then it waits for approval (202). Every key expires."""
    outcome = ctx.rt.approvals.request_api_key(ctx.caller(), body.name, body.role, body.days,
                                               body.scopes)
    key, token = outcome.key, outcome.token
    assert key is not None and token is not None and key.expires_at is not None
    if outcome.approval is not None:
        return _proposal(outcome, ProposedApiKey, id=key.id, role=key.role, api_key=token,
                         expires_at=iso(key.expires_at))
    return CreatedApiKey(id=key.id, role=key.role, api_key=token,
                         expires_at=iso(key.expires_at))


@router.delete("/apikeys/{key_id}", status_code=204, response_class=Response,
               responses=documented(404, 422))
def revoke_api_key(key_id: str, ctx: KeyAdmin) -> None:
    who = ctx.caller()
    ctx.rt.api_keys.revoke(key_id, by=who)


@router.get("/approvals", responses=documented(422))
def list_approvals(ctx: ApprovalReader, status: Annotated[str | None, Query(
        description="`pending`, `approved` or `rejected`")] = None) -> ApprovalList:
    who = ctx.caller()
    items = [Approval.of(a) for a in ctx.rt.approvals.list(status)]
    _listed(ctx, who, "approvals")
    return ApprovalList(items=items)


@router.post("/approvals/{approval_id}/approve", responses=documented(404, 409, 422))
def approve(approval_id: str, ctx: Approver, body: Decision | None = None) -> Approval:
    """By a person holding ``approvals:decide`` other than the proposer (and other than the
    user whose access changes); the change takes effect now."""
    return Approval.of(ctx.rt.approvals.approve(ctx.caller(), approval_id,
                                                body.note if body else None))


@router.post("/approvals/{approval_id}/reject", responses=documented(404, 409, 422))
def reject(approval_id: str, ctx: Approver, body: Decision | None = None) -> Approval:
    """Nothing is applied; a proposed API key is revoked."""
    return Approval.of(ctx.rt.approvals.reject(ctx.caller(), approval_id,
                                               body.note if body else None))
