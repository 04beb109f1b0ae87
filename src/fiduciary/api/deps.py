"""What routes depend on: the runtime (``app.state``) and the caller's bearer token.

Both dependencies are ``async``: they read the request only, so FastAPI runs them on the event
loop. Authentication reads the database, so it happens in the endpoint's own worker thread
(:meth:`Ctx.caller`), the one thread-pool hop of a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fiduciary.access.users import SESSION_PREFIX
from fiduciary.errors import Forbidden, Reason
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An API key (fdy_…) or a staff session "
                     "(fds_…, from POST /v1/auth/login)")


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


@dataclass(frozen=True, slots=True)
class Ctx:
    """A request's runtime and bearer token, not yet authenticated."""

    rt: Runtime
    token: str

    def authenticate(self) -> Principal:
        """Who the token belongs to, even with an initial password still to change (logout
        and the password change itself). Blocking: call it from the endpoint."""
        if self.token.startswith(SESSION_PREFIX):
            return self.rt.users.authenticate(self.token)
        return self.rt.api_keys.authenticate(self.token or None)

    def caller(self, *permissions: Permission) -> Principal:
        """The authenticated caller, holding one of ``permissions`` when any are named."""
        who = self.authenticate()
        if who.must_change_password:
            raise Forbidden("change the initial password first: POST /v1/auth/password",
                            reason=Reason.PASSWORD_CHANGE_REQUIRED)
        if permissions:
            require_permission(who, *permissions)
        return who


async def context(
    rt: Rt, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Ctx:
    if creds is None:
        # No credential at all: refused at once (no I/O), before the parameters are looked at.
        rt.api_keys.authenticate(None)
    return Ctx(rt, creds.credentials if creds else "")


Context = Annotated[Ctx, Depends(context)]
