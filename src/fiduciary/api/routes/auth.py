"""Staff sessions: enrolment, login, logout, password change, the caller, break-glass."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from fiduciary.api.deps import Context, Ctx, OneHopRoute, Rt, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.clock import iso
from fiduciary.errors import Unauthenticated
from fiduciary.principal import ActorKind

router = APIRouter(prefix="/v1/auth", tags=["auth"], route_class=OneHopRoute)

#: Even a user whose initial password is still to change.
AnyCaller = Annotated[Ctx, Depends(requires(initial_password_ok=True))]


class LoginRequest(BaseModel):
    username: str
    password: str
    totp: str | None = None
    recovery_code: str | None = None


class EnrolRequest(BaseModel):
    username: str
    enrolment_code: str = Field(description="The one-time code the operator handed over")
    password: str = Field(description="The password the user chooses")


class Enrolment(BaseModel):
    """Shown once: scan the URI into an authenticator app, keep the recovery codes."""

    totp_secret: str
    totp_uri: str
    recovery_codes: list[str]


class Session(BaseModel):
    token: str = Field(description="The bearer token of the session (fds_…)")
    expires_at: Timestamp


class PasswordChange(BaseModel):
    current: str
    new: str


class Me(BaseModel):
    id: str
    kind: str
    username: str
    roles: list[str]
    regions: list[str]
    permissions: list[str]
    training_current: bool
    break_glass: dict[str, Timestamp] = Field(description="subject id: expiry of the grant")


class BreakGlassRequest(BaseModel):
    subject_ids: list[str]
    justification: str
    minutes: int = 30


class BreakGlassGrant(BaseModel):
    id: str
    subject_ids: list[str]
    expires_at: Timestamp
    review: str


@router.post("/enrol", responses=documented(401, 403, 422, 429))
def enrol(body: EnrolRequest, rt: Rt) -> Enrolment:
    """A new (or re-enrolled) user's first step: the one-time enrolment code and a chosen
    password give the TOTP secret and recovery codes; then log in as usual."""
    e = rt.users.enrol(body.username, body.enrolment_code, body.password)
    return Enrolment(totp_secret=e.totp_secret, totp_uri=e.totp_uri,
                     recovery_codes=e.recovery_codes)


@router.post("/login", responses=documented(401, 403, 422, 429))
def login(body: LoginRequest, rt: Rt) -> Session:
    s = rt.users.login(body.username, body.password, body.totp, body.recovery_code)
    return Session(token=s.token, expires_at=iso(s.expires_at))


@router.post("/logout", status_code=204, response_class=Response, responses=documented(401))
def logout(ctx: AnyCaller) -> None:
    """Ends the session (an API key has none to end)."""
    who = ctx.caller()
    if who.kind == ActorKind.USER:
        ctx.rt.users.logout(who, ctx.token)


class SessionsEnded(BaseModel):
    sessions_ended: int = Field(description="Including the one that asked")


@router.post("/logout-all", responses=documented(401))
def logout_all(ctx: AnyCaller) -> SessionsEnded:
    """Ends every session of the caller, this one included (a lost device, a shared
    screen). An API key has none."""
    who = ctx.caller()
    if who.kind != ActorKind.USER:
        raise Unauthenticated("signing out everywhere needs a staff session")
    return SessionsEnded(sessions_ended=ctx.rt.users.logout_everywhere(who))


@router.post("/password", status_code=204, response_class=Response,
             responses=documented(401, 403, 422, 429))
def change_password(body: PasswordChange, ctx: AnyCaller) -> None:
    """Required before anything else after a password reset. A wrong ``current`` counts
    toward the lockout; a change ends the user's other sessions."""
    who = ctx.caller()
    if who.kind != ActorKind.USER:
        raise Unauthenticated("password changes need a staff session")
    ctx.rt.users.change_password(who, body.current, body.new, keep_session=ctx.token)


@router.get("/me", responses=documented(401, 403))
def me(ctx: Context) -> Me:
    who = ctx.caller()
    return Me(id=who.id, kind=who.kind, username=who.username, roles=list(who.roles),
              regions=list(who.regions), permissions=sorted(who.permissions),
              training_current=who.training_current,
              break_glass={s: iso(exp) for s, (_, exp) in who.break_glass.items()})


@router.post("/break-glass", status_code=201, responses=documented(401, 403, 422))
def break_glass(body: BreakGlassRequest, ctx: Context) -> BreakGlassGrant:
    g = ctx.rt.users.break_glass(ctx.caller(), body.subject_ids, body.justification,
                                 body.minutes)
    return BreakGlassGrant(id=g.id, subject_ids=g.subject_ids, expires_at=iso(g.expires_at),
                           review="pending")
