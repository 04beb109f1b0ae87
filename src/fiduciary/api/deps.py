"""What routes depend on, and how they run: one thread-pool hop per request.

The dependencies — the runtime (``app.state``) and a :class:`Ctx` holding the caller's bearer
token and what the route requires of the caller — are ``async`` and read the request only, so
FastAPI runs them on the event loop. Authentication reads the database, so the endpoint does
it (:meth:`Ctx.caller`), in its worker thread; and :class:`OneHopRoute` keeps FastAPI from
checking the endpoint's return value in a second one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from fiduciary.access.users import SESSION_PREFIX
from fiduciary.api.errors import CALLER_CHECK
from fiduciary.errors import Forbidden, Reason
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An API key (fdy_…) or a staff session "
                     "(fds_…, from POST /v1/auth/login)")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


@dataclass(frozen=True, slots=True)
class Ctx:
    """A request's runtime and bearer token (not yet authenticated), and what its route
    requires of the caller."""

    rt: Runtime
    token: str
    #: One of these (none: any authenticated caller).
    permissions: tuple[Permission, ...] = ()
    #: Logout and the password change itself serve a user whose initial password is unchanged.
    initial_password_ok: bool = False

    def caller(self) -> Principal:
        """The caller, authenticated and checked against what the route requires. Blocking
        (it reads the database): the endpoint calls it, in its worker thread."""
        if self.token.startswith(SESSION_PREFIX):
            who = self.rt.users.authenticate(self.token)
        else:
            who = self.rt.api_keys.authenticate(self.token or None)
        if who.must_change_password and not self.initial_password_ok:
            raise Forbidden("change the initial password first: POST /v1/auth/password",
                            reason=Reason.PASSWORD_CHANGE_REQUIRED)
        if self.permissions:
            require_permission(who, *self.permissions, scope=None)
        return who


def requires(*permissions: Permission, initial_password_ok: bool = False
             ) -> Callable[..., Coroutine[Any, Any, Ctx]]:
    """The dependency giving a route's :class:`Ctx`. It also leaves the caller check where
    the validation-error handler finds it: a request that is both refused and malformed gets
    the refusal (401/403), not the 422."""

    async def context(request: Request, rt: Rt, creds: Bearer) -> Ctx:
        ctx = Ctx(rt, creds.credentials if creds else "", permissions, initial_password_ok)
        request.scope[CALLER_CHECK] = ctx.caller
        return ctx

    return context


#: Any authenticated caller.
Context = Annotated[Ctx, Depends(requires())]


class OneHopRoute(APIRoute):
    """A route whose sync endpoint FastAPI sees as a coroutine that runs it in the thread
    pool. FastAPI validates a sync endpoint's return value in another thread-pool hop, a
    coroutine's on the event loop: the model the endpoint built is only type-checked there."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _in_worker(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _in_worker(function: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(function)  # FastAPI reads the signature through __wrapped__
    async def endpoint(**values: Any) -> Any:
        return await run_in_threadpool(function, **values)

    return endpoint
