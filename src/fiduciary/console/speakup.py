"""The speak-up channel in the browser, over the service ``/v1/speakup`` uses
(``fiduciary.workforce.speakup``):

- public pages for the reporter (no sign-in, no cookie): file a report and see the receipt
  once; type the receipt (in a POST form, never in a URL) to read the thread and reply;
- the ethics officer's case list and case page (``speakup:manage``): acknowledge, answer,
  close.

Nothing of the reporter's request is kept: everything under :data:`PREFIX` leaves no
access-log line and no client address in the request context (``console.install`` and
``api.middleware``), the address is passed to the service only for its rate limit (counted
under a rotating key, never stored), and no page here sets a cookie.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fiduciary.console.pages import (
    ConsolePage,
    Form,
    Rt,
    Signed,
    _status,
    page,
    signed_in,
    templates,
)
from fiduciary.errors import (
    FiduciaryError,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    WorkflowConflict,
)
from fiduciary.principal import Permission
from fiduciary.workforce.speakup import Overdue

#: Every page of the channel, the reporter's and the officer's.
PREFIX = "/console/speakup"


class PublicForm(ConsolePage):
    """A console route whose POSTs carry no CSRF token. A CSRF token protects what a
    session may do; these forms act for nobody: they read no cookie and change nothing of
    anyone's account. A submission forged from another site gains nothing — filing a
    report is open to anyone anyway (rate-limited per address), and reading or answering a
    thread needs the receipt, which a forger who had it could use directly; the answer is
    not readable across origins. A token would need a cookie, and the reporter gets none."""

    csrf_checked = False


public = APIRouter(prefix=PREFIX, route_class=PublicForm, include_in_schema=False)
cases_router = APIRouter(prefix=PREFIX, route_class=ConsolePage, include_in_schema=False)
_REPORTER_REFUSED = (InvalidInput, Unauthenticated, RateLimited, WorkflowConflict)
_HANDLER_REFUSED = (InvalidInput, NotFound, WorkflowConflict)


def _address(request: Request) -> str | None:
    """Counted for the rate limit (under a rotating key), never stored."""
    return request.client.host if request.client else None


def _public(request: Request, template: str, status: int = 200,
            refused: FiduciaryError | None = None, **context: Any) -> Response:
    """A page for the reporter: nobody signed in, no navigation, no cookie."""
    response = templates.TemplateResponse(request, template, {
        "who": None, "nav": [], "problem": refused.message if refused else None,
        "fields": refused.fields if refused else [], **context},
        status_code=_status(refused) if refused else status)
    if isinstance(refused, RateLimited):
        response.headers["Retry-After"] = str(int(refused.retry_after))
    return response


# -- the reporter (no sign-in) ---------------------------------------------------------------
@public.get("")
def report_form(request: Request) -> Response:
    return _public(request, "speakup/report.html")


@public.post("")
def submit_report(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/speakup/reports``. The receipt is shown by this response alone (a
    redirect would carry it in a URL) and never again."""
    try:
        made = rt.speakup.submit(fields.get("text", ""), fields.get("category") or None,
                                 fields.get("identify_as") or None, address=_address(request))
    except _REPORTER_REFUSED as exc:
        return _public(request, "speakup/report.html", refused=exc, form=fields)
    return _public(request, "speakup/receipt.html", status=201, made=made)


@public.get("/thread")
def thread_form(request: Request) -> Response:
    return _public(request, "speakup/thread.html", thread=None)


def _thread(request: Request, rt: Rt, receipt: str, status: int = 200,
            refused: FiduciaryError | None = None) -> Response:
    try:
        thread = rt.speakup.thread(receipt, address=_address(request))
    except _REPORTER_REFUSED as exc:
        # One answer for a wrong, malformed or missing receipt (the service's).
        return _public(request, "speakup/thread.html", thread=None, refused=exc)
    # The receipt goes back in the reply form's hidden field: the page is not cached and
    # sends no referrer (console.SECURITY_HEADERS), and the reporter typed it here.
    return _public(request, "speakup/thread.html", status=status, thread=thread,
                   receipt=receipt, refused=refused)


@public.post("/thread")
def read_thread(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``GET /v1/speakup/thread`` with the receipt in the form's body."""
    return _thread(request, rt, fields.get("receipt", ""))


@public.post("/thread/messages")
def reply(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/speakup/thread/messages``; the thread is shown again with it."""
    receipt = fields.get("receipt", "")
    try:
        rt.speakup.add_message(receipt, fields.get("text", ""), address=_address(request))
    except _REPORTER_REFUSED as exc:
        return _thread(request, rt, receipt, refused=exc)
    return _thread(request, rt, receipt, status=201)


# -- the ethics officer ----------------------------------------------------------------------
def _officer(rt: Rt, request: Request) -> Signed:
    return signed_in(rt, request, Permission.SPEAKUP_MANAGE)


@cases_router.get("/cases")
def case_list(request: Request, rt: Rt, overdue: Overdue | None = None) -> Response:
    """As ``GET /v1/speakup/reports``: every case, newest first, overdue ones flagged."""
    s = _officer(rt, request)
    return page(request, s, "speakup/cases.html", cases=rt.speakup.cases(s.who, overdue),
                overdue=overdue, now=rt.clock.now())


def _case_page(request: Request, s: Signed, case_id: str, refused: FiduciaryError | None = None
               ) -> Response:
    return page(request, s, "speakup/case.html", case=s.rt.speakup.show(s.who, case_id),
                status=_status(refused) if refused else 200,
                problem=refused.message if refused else None,
                fields=refused.fields if refused else [])


@cases_router.get("/cases/{case_id}")
def case(request: Request, rt: Rt, case_id: str) -> Response:
    """As ``GET /v1/speakup/reports/{id}``: the report, identity if given, thread, outcome."""
    return _case_page(request, _officer(rt, request), case_id)


@cases_router.post("/cases/{case_id}/{action}")
def handle_case(request: Request, rt: Rt, case_id: str, action: str, fields: Form
                ) -> Response:
    """Acknowledge, answer (``feedback``) or close, as the API's case actions."""
    s = _officer(rt, request)
    try:
        if action == "acknowledge":
            rt.speakup.acknowledge(s.who, case_id)
        elif action == "feedback":
            rt.speakup.feedback(s.who, case_id, fields.get("text", ""))
        elif action == "close":
            rt.speakup.close(s.who, case_id, fields.get("outcome", ""))
        else:
            raise NotFound("no such case action", code="not_found")
    except _HANDLER_REFUSED as exc:
        return _case_page(request, s, case_id, exc)
    return RedirectResponse(f"{PREFIX}/cases/{case_id}", status_code=303)
