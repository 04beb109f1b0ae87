"""Administration: staff users (``users:manage``) and API keys (``apikeys:manage``). No
customer data."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.clock import iso
from fiduciary.principal import Permission

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=documented(401, 403),
                   route_class=OneHopRoute)
UserAdmin = Annotated[Ctx, Depends(requires(Permission.USERS_MANAGE))]
KeyAdmin = Annotated[Ctx, Depends(requires(Permission.APIKEYS_MANAGE))]


class NewUser(BaseModel):
    username: str
    roles: list[str]
    regions: list[str] = []


class UserSummary(BaseModel):
    username: str
    roles: list[str]
    regions: list[str]
    disabled: bool
    mfa_enrolled: bool
    last_login_at: Timestamp | None


class UserList(BaseModel):
    items: list[UserSummary]


class NewUserCredentials(BaseModel):
    """Shown once."""

    username: str
    password: str
    totp_secret: str
    totp_uri: str
    recovery_codes: list[str]


class DisabledUser(BaseModel):
    username: str
    disabled: bool


class NewApiKey(BaseModel):
    name: str
    role: str = "service"
    scopes: list[str] | None = None
    days: int | None = None


class ApiKeySummary(BaseModel):
    id: str
    name: str
    role: str
    state: str
    scopes: list[str] | None


class ApiKeyList(BaseModel):
    items: list[ApiKeySummary]


class CreatedApiKey(BaseModel):
    """The secret is shown once."""

    id: str
    role: str
    api_key: str


@router.get("/users")
def list_users(ctx: UserAdmin) -> UserList:
    ctx.caller()
    return UserList(items=[UserSummary(
        username=u.username, roles=list(u.roles), regions=list(u.regions),
        disabled=u.disabled_at is not None, mfa_enrolled=u.mfa_enrolled_at is not None,
        last_login_at=iso(u.last_login_at) if u.last_login_at else None)
        for u in ctx.rt.users.all()])


@router.post("/users", status_code=201, responses=documented(409, 422))
def create_user(body: NewUser, ctx: UserAdmin) -> NewUserCredentials:
    ctx.caller()
    c = ctx.rt.users.create(body.username, body.roles, body.regions)
    return NewUserCredentials(username=c.user.username, password=c.password,
                              totp_secret=c.totp_secret, totp_uri=c.totp_uri,
                              recovery_codes=c.recovery_codes)


@router.post("/users/{username}/disable", responses=documented(404, 422))
def disable_user(username: str, ctx: UserAdmin) -> DisabledUser:
    """Ends the user's sessions."""
    ctx.caller()
    return DisabledUser(username=ctx.rt.users.set_disabled(username, True).username,
                        disabled=True)


@router.get("/apikeys")
def list_api_keys(ctx: KeyAdmin) -> ApiKeyList:
    ctx.caller()
    now = ctx.rt.clock.now()
    return ApiKeyList(items=[ApiKeySummary(
        id=k.id, name=k.name, role=k.role, state=k.state(now),
        scopes=list(k.scopes) if k.scopes else None) for k in ctx.rt.api_keys.all()])


@router.post("/apikeys", status_code=201, responses=documented(422))
def create_api_key(body: NewApiKey, ctx: KeyAdmin) -> CreatedApiKey:
    ctx.caller()
    key, token = ctx.rt.api_keys.create(body.name, body.role,
                                        timedelta(days=body.days) if body.days else None,
                                        body.scopes)
    return CreatedApiKey(id=key.id, role=key.role, api_key=token)


@router.delete("/apikeys/{key_id}", status_code=204, response_class=Response,
               responses=documented(404, 422))
def revoke_api_key(key_id: str, ctx: KeyAdmin) -> None:
    ctx.caller()
    ctx.rt.api_keys.revoke(key_id)
