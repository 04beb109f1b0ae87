"""The console's routes: sign-in, sign-out, the dashboard and the DSR queue.

Routes call services with the signed-in principal and render what comes back; the services
decide (permissions, lockout, audit). Domain errors become HTML pages here, as ``api.errors``
turns them into JSON for the API.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from fiduciary.console.session import (
    COOKIE_PATH,
    CSRF_FIELD,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    CsrfTokens,
    new_pre_session,
)
from fiduciary.errors import (
    FiduciaryError,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    RateLimited,
    Reason,
    Unauthenticated,
    WorkflowConflict,
)
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.runtime import Runtime

_HERE = Path(__file__).parent
templates = Jinja2Templates(env=Environment(
    loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(default=True)))

#: The amber band of the DSR queue: due within this many days.
DUE_SOON = timedelta(days=7)
_STATUS: list[tuple[type[FiduciaryError], int]] = [
    (InvalidInput, 422), (NotFound, 404), (Gone, 410), (Unauthenticated, 401),
    (Forbidden, 403), (WorkflowConflict, 409), (RateLimited, 429)]


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    #: One of these shows the item (none: every signed-in user).
    permissions: tuple[Permission, ...] = ()
    #: The heading the item is listed under.
    section: str = ""
    #: Shown only to a role the policy lets read customer records (no permission says so).
    reads_customers: bool = False

    def visible_to(self, who: Principal, rt: Runtime | None = None) -> bool:
        if self.reads_customers and (rt is None or not rt.policy.has_any_grant(who, ("read",))):
            return False
        return not self.permissions or any(who.can(p) for p in self.permissions)


P = Permission
#: The navigation, by section; each page's route requires what its item requires (the
#: section modules ``privacy``, ``compliance``, ``security``, ``admin`` and ``me`` own them).
NAV = (
    NavItem("Dashboard", "/console/"),
    # Privacy office
    NavItem("DSR queue", "/console/privacy/dsr", (P.PRIVACY_MANAGE,), "Privacy"),
    NavItem("Consent", "/console/privacy/consent", (P.CONSENT_READ, P.PRIVACY_MANAGE),
            "Privacy"),
    NavItem("Legal holds", "/console/privacy/holds", (P.PRIVACY_MANAGE,), "Privacy"),
    NavItem("Retention", "/console/privacy/retention", (P.PRIVACY_MANAGE,), "Privacy"),
    # The register is configuration: the service asks config:read alone.
    NavItem("Processing records", "/console/privacy/ropa", (P.CONFIG_READ,), "Privacy"),
    # Compliance
    NavItem("Who saw a customer", "/console/compliance/access-log", (P.AUDIT_READ,),
            "Compliance"),
    NavItem("Audit search", "/console/compliance/audit", (P.AUDIT_READ,), "Compliance"),
    NavItem("Posture", "/console/compliance/posture", (P.COMPLIANCE_READ,), "Compliance"),
    NavItem("Training & reviews", "/console/compliance/workforce",
            (P.TRAINING_READ, P.REVIEWS_READ), "Compliance"),
    # Security
    NavItem("Alerts", "/console/security/alerts", (P.ALERTS_READ, P.ALERTS_MANAGE),
            "Security"),
    NavItem("Incidents", "/console/security/incidents", (P.INCIDENTS_READ, P.INCIDENTS_MANAGE),
            "Security"),
    # The second person who reviews a grant holds audit:read (the service's rule).
    NavItem("Break-glass review", "/console/security/break-glass", (P.AUDIT_READ,),
            "Security"),
    NavItem("Watch list & suppressions", "/console/security/watchlist",
            (P.ALERTS_READ, P.ALERTS_MANAGE), "Security"),
    NavItem("Speak-up cases", "/console/speakup/cases", (P.SPEAKUP_MANAGE,), "Security"),
    # Administration
    NavItem("Users", "/console/admin/users", (P.USERS_MANAGE,), "Administration"),
    NavItem("API keys", "/console/admin/api-keys", (P.APIKEYS_MANAGE,), "Administration"),
    NavItem("Approvals", "/console/admin/approvals",
            (P.APPROVALS_DECIDE, P.USERS_MANAGE, P.APIKEYS_MANAGE), "Administration"),
    NavItem("Access reviews", "/console/admin/reviews", (), "Administration"),
    NavItem("HR sync", "/console/admin/hr", (P.USERS_MANAGE, P.REVIEWS_READ),
            "Administration"),
    NavItem("Keys", "/console/admin/keys", (P.CONFIG_READ,), "Administration"),
    # Every staff member
    NavItem("Customers", "/console/customers", (), "Me", reads_customers=True),
    NavItem("My training", "/console/me/training", (), "Me"),
    NavItem("My sessions", "/console/me/sessions", (), "Me"),
    NavItem("My break-glass", "/console/me/break-glass", (), "Me"),
)


#: Forms posted before sign-in: their CSRF token is bound to the pre-session cookie.
BEFORE_SIGN_IN = frozenset({"/console/login", "/console/enrol"})


class ConsolePage(APIRoute):
    """A console route. Every POST's CSRF token is checked here, before the route runs, so
    no form can forget it; domain errors are HTML pages: no session sends the browser to
    sign in, a refusal is a 403 page naming the reason (never a value)."""

    #: Off only for public forms that act for nobody (``console.speakup.PublicForm``).
    csrf_checked = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                if request.method == "POST" and self.csrf_checked:
                    fields = await form(request)  # the body is cached for the route's own read
                    cookie = (PRE_SESSION_COOKIE if request.url.path in BEFORE_SIGN_IN
                              else SESSION_COOKIE)
                    csrf(request.app.state.runtime).check(request.cookies.get(cookie),
                                                          fields.get(CSRF_FIELD))
                return await handler(request)
            except Unauthenticated:
                return _to_login(request)
            except Forbidden as exc:
                if exc.reason == Reason.PASSWORD_CHANGE_REQUIRED:
                    return RedirectResponse("/console/password", status_code=303)
                return error_page(request, exc)
            except FiduciaryError as exc:
                return error_page(request, exc)

        return handle


router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """Every field of an urlencoded form, repeated ones (checkboxes) included."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qsl(body, keep_blank_values=True)


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of a repeated one)."""
    return dict(await form_pairs(request))


Form = Annotated[dict[str, str], Depends(form)]
FormPairs = Annotated[list[tuple[str, str]], Depends(form_pairs)]


def csrf(rt: Runtime) -> CsrfTokens:
    return CsrfTokens(rt.keyring.derive_key("console/csrf"))


def _status(exc: FiduciaryError) -> int:
    return next((s for cls, s in _STATUS if isinstance(exc, cls)), 400)


def refusal(exc: FiduciaryError) -> dict[str, Any]:
    """What a refused form shows again: the service's message, its fields and its status."""
    return {"problem": exc.message, "fields": exc.fields, "status": _status(exc)}


def error_page(request: Request, exc: FiduciaryError, who: Principal | None = None
               ) -> Response:
    status = _status(exc)
    return templates.TemplateResponse(request, "error.html", {
        "who": who, "nav": _nav(who, request.app.state.runtime), "status": status,
        "message": exc.message, "fields": exc.fields}, status_code=status)


def _to_login(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


def _nav(who: Principal | None, rt: Runtime | None = None) -> list[NavItem]:
    return [item for item in NAV if who is not None and item.visible_to(who, rt)]


@dataclass(frozen=True)
class Signed:
    """The signed-in user of a console request, and their session token."""

    rt: Runtime
    token: str
    who: Principal


def signed_in(rt: Runtime, request: Request, *permissions: Permission,
              initial_password_ok: bool = False) -> Signed:
    """The cookie's session, authenticated as the API's (idle and absolute timeouts), and
    holding one of ``permissions``; a user whose password was reset is sent to change it
    first. Blocking: called from the route's worker thread."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise Unauthenticated("sign in first")
    who = rt.users.authenticate(token)
    if who.must_change_password and not initial_password_ok:
        raise Forbidden("change the initial password first",
                        reason=Reason.PASSWORD_CHANGE_REQUIRED)
    if permissions:
        require_permission(who, *permissions, scope=None)
    return Signed(rt, token, who)


def page(request: Request, s: Signed, template: str, status: int = 200, **context: Any
         ) -> Response:
    return templates.TemplateResponse(request, template, {
        "who": s.who, "nav": _nav(s.who, s.rt), "csrf": csrf(s.rt).token(s.token),
        "path": request.url.path, **context}, status_code=status)


# -- sign-in ------------------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request, rt: Rt) -> Response:
    return _before_sign_in(request, rt, "login.html")


def _before_sign_in(request: Request, rt: Rt, template: str,
                    refused: FiduciaryError | None = None, **context: Any) -> Response:
    """A form shown before sign-in (sign-in, enrolment), its CSRF token bound to a random
    pre-session cookie; after a refusal, with the service's message and its status."""
    pre = request.cookies.get(PRE_SESSION_COOKIE) or new_pre_session()
    status = 200 if refused is None else _status(refused)
    response = templates.TemplateResponse(request, template, {
        "who": None, "nav": [], "csrf": csrf(rt).token(pre),
        "problem": refused.message if refused else None,
        "fields": refused.fields if refused else [], **context}, status_code=status)
    if isinstance(refused, RateLimited):
        response.headers["Retry-After"] = str(refused.retry_after)
    _set_cookie(response, rt, PRE_SESSION_COOKIE, pre)
    return response


@router.post("/login")
def login(request: Request, rt: Rt, fields: Form) -> Response:
    username = fields.get("username", "")
    try:
        session = rt.users.login(username, fields.get("password", ""),
                                 fields.get("totp") or None)
    except (Unauthenticated, Forbidden, RateLimited) as exc:
        return _before_sign_in(request, rt, "login.html", exc, username=username)
    response = RedirectResponse("/console/", status_code=303)
    _set_cookie(response, rt, SESSION_COOKIE, session.token)
    response.delete_cookie(PRE_SESSION_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/enrol")
def enrol_form(request: Request, rt: Rt) -> Response:
    return _before_sign_in(request, rt, "enrol.html")


@router.post("/enrol")
def enrol(request: Request, rt: Rt, fields: Form) -> Response:
    """A new user's first step, as ``POST /v1/auth/enrol``: the one-time code and a chosen
    password give the TOTP secret and recovery codes, shown on this page once."""
    username = fields.get("username", "")
    try:
        enrolled = rt.users.enrol(username, fields.get("enrolment_code", ""),
                                  fields.get("password", ""))
    except (Unauthenticated, Forbidden, RateLimited, InvalidInput) as exc:
        return _before_sign_in(request, rt, "enrol.html", exc, username=username)
    return _before_sign_in(request, rt, "enrolled.html", enrolled=enrolled,
                           username=username)


def _set_cookie(response: Response, rt: Runtime, name: str, value: str) -> None:
    # No max-age: the cookie ends with the browser; the server's idle and absolute
    # timeouts end the session itself.
    response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=rt.settings.console_secure_cookie)


@router.post("/logout")
def logout(request: Request, rt: Rt) -> Response:
    s = signed_in(rt, request)
    rt.users.logout(s.who, s.token)
    return _to_login(request)


@router.get("/password")
def password_form(request: Request, rt: Rt) -> Response:
    s = signed_in(rt, request, initial_password_ok=True)
    return page(request, s, "password.html")


@router.post("/password")
def change_password(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/auth/password``: a wrong current password counts toward the lockout;
    the user's other sessions end, this one stays."""
    s = signed_in(rt, request, initial_password_ok=True)
    try:
        rt.users.change_password(s.who, fields.get("current", ""), fields.get("new", ""),
                                 keep_session=s.token)
    except InvalidInput as exc:
        return page(request, s, "password.html", **refusal(exc))
    return RedirectResponse("/console/", status_code=303)


# -- pages ----------------------------------------------------------------------------------------
@router.get("/privacy/dsr")
def dsr_queue(request: Request, rt: Rt) -> Response:
    """Open and closed requests by due date (the service sorts), open ones banded."""
    s = signed_in(rt, request, Permission.PRIVACY_MANAGE)
    now = rt.clock.now()
    rows = [(r, r.band(now, DUE_SOON)) for r in rt.dsr.browse(s.who)]
    return page(request, s, "dsr_queue.html", rows=rows, now=now)
