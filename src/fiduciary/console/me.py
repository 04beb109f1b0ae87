"""Every staff member's pages: customers (a record seen for the purpose the user chose, as the
vault decides: masked, withheld fields with their reasons, audited like an API read), my
training (take an assessment), my sessions (sign out everywhere) and my break-glass grants.

Each route calls the service the API route calls, with the signed-in principal; the service
decides and audits. Nothing here chooses a purpose for the user: a customer's records are
listed, and a record shown, only after a purpose is picked from those the policy gives the
role."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fiduciary.console.pages import ConsolePage, Form, Rt, Signed, page, refusal, signed_in
from fiduciary.console.session import COOKIE_PATH, SESSION_COOKIE
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Reason,
    WorkflowConflict,
)
from fiduciary.principal import Principal
from fiduciary.runtime import Runtime

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)

#: Results of one search in the console (the API allows up to MAX_SEARCH_LIMIT).
SEARCH_LIMIT = 50
_READ = ("read",)
_REFUSED = (InvalidInput, Forbidden, NotFound, WorkflowConflict, RateLimited)


# -- customers -------------------------------------------------------------------------------
def _with_data_access(rt: Runtime, request: Request) -> Signed:
    """A signed-in user whose role reads customer records (the navigation shows the page
    to them alone; the vault refuses everyone else in any case)."""
    s = signed_in(rt, request)
    if not rt.policy.has_any_grant(s.who, _READ):
        raise Forbidden("this role has no access to customer data",
                        reason=Reason.FIELD_NOT_PERMITTED)
    return s


def _purposes(rt: Runtime, who: Principal, collections: list[str]) -> list[tuple[str, str]]:
    """(purpose, description) of each purpose the role's read grants name on these
    collections, where one of their fields is used for it: the choices offered, none
    preselected."""
    names: set[str] = set()
    for name in collections:
        used = {p for f in rt.datamap.collections[name].fields.values() for p in f.purposes}
        names |= set(rt.policy.purposes_for(who, name, "read")) & used
    return [(p, rt.datamap.purposes[p].description) for p in sorted(names)]


def _searchable(rt: Runtime, who: Principal) -> list[tuple[str, str]]:
    """(collection, field) pairs the role may search by for some purpose."""
    out = []
    for name, spec in rt.datamap.collections.items():
        if rt.policy.purposes_for(who, name, "search"):
            out += [(name, f) for f, d in spec.fields.items() if d.searchable]
    return out


def _customers(request: Request, s: Signed, status: int = 200, **context: Any) -> Response:
    rt = s.rt
    return page(request, s, "me/customers.html", status=status,
                searchable=_searchable(rt, s.who),
                purposes=_purposes(rt, s.who, list(rt.datamap.collections)), **context)


@router.get("/customers")
def customers(request: Request, rt: Rt, subject: str = "") -> Response:
    """Find a customer by subject id (or by a search below)."""
    s = _with_data_access(rt, request)
    if subject.strip():
        return RedirectResponse(f"/console/customers/{quote(subject.strip(), safe='')}",
                                status_code=303)
    return _customers(request, s)


@router.post("/customers/search")
def search_customers(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/collections/{collection}/search``: equality on one searchable field,
    for a chosen purpose; audited with the value's digest. Answered by this response, not a
    redirect: the value searched for must not travel in a URL."""
    s = _with_data_access(rt, request)
    collection, _, field = fields.get("field", "").partition(".")
    purpose = fields.get("purpose") or None
    try:
        found = rt.vault.search(s.who, collection, {field: fields.get("value", "")}, purpose,
                                SEARCH_LIMIT)
    except _REFUSED as exc:
        return _customers(request, s, **refusal(exc))
    return _customers(request, s, searched=(collection, field), purpose=purpose,
                      found=[(r, record_url(r.subject_id, r.collection, r.id, str(purpose)))
                             for r in found])


@router.get("/customers/{subject}")
def customer(request: Request, rt: Rt, subject: str, purpose: str = "") -> Response:
    """Without a purpose: the choice of one. With it: the customer's records in the
    collections used for it, as ``GET /v1/subjects/{id}/records`` (audited)."""
    s = _with_data_access(rt, request)
    if not purpose:
        return page(request, s, "me/customer.html", subject=subject, records=None,
                    purposes=_purposes(rt, s.who, list(rt.datamap.collections)))
    records = rt.vault.list_subject_records(s.who, subject, purpose)
    return page(request, s, "me/customer.html", subject=subject, purpose=purpose,
                records=[(r, record_url(r.subject_id, r.collection, r.id, purpose))
                         for r in records])


@router.get("/customers/{subject}/records/{collection}/{record_id}")
def customer_record(request: Request, rt: Rt, subject: str, collection: str, record_id: str,
                    purpose: str = "") -> Response:
    """Without a purpose: the choice of one. With it: the record exactly as
    ``GET /v1/collections/{collection}/records/{id}`` returns it to this user for that
    purpose (the same call, audited with the purpose): masked values masked, withheld
    fields with their reasons."""
    s = _with_data_access(rt, request)
    spec = rt.vault.collection(collection)
    if not purpose:
        return page(request, s, "me/record.html", subject=subject, collection=collection,
                    record_id=record_id, record=None,
                    purposes=_purposes(rt, s.who, [spec.name]))
    record = rt.vault.get_record(s.who, collection, record_id, purpose)
    if record.subject_id != subject:
        # A record of another customer under this one's address: not shown as theirs.
        raise NotFound("record not found for this customer", code="record_not_found")
    shown = [(name, record.data[name], name in record.masked)
             for name in spec.fields if name in record.data]
    return page(request, s, "me/record.html", subject=subject, collection=collection,
                record_id=record_id, record=record, shown=shown, purpose=purpose,
                withheld=[(w.field, w.reason) for w in record.withheld])


# -- my training -----------------------------------------------------------------------------
@router.get("/me/training")
def my_training(request: Request, rt: Rt) -> Response:
    """As ``GET /v1/me/training``: my courses, their status and expiry."""
    s = signed_in(rt, request)
    return page(request, s, "me/training.html", courses=rt.training.mine(s.who))


def _course(rt: Runtime, s: Signed, course_id: str) -> dict[str, Any]:
    found = next((c for c in rt.training.mine(s.who) if c["id"] == course_id), None)
    if found is None:
        raise NotFound(f"course {course_id} not found among your courses",
                       code="course_not_found")
    return found


@router.get("/me/training/{course_id}")
def course(request: Request, rt: Rt, course_id: str) -> Response:
    """The assessment's questions as a form (never which choices are right)."""
    s = signed_in(rt, request)
    return page(request, s, "me/course.html", course=_course(rt, s, course_id))


def _answers(course: dict[str, Any], fields: dict[str, str]) -> list[int | list[int]]:
    """One answer per question from the form: ``q<i>`` a choice's index, or for a question
    with several right choices one checkbox ``q<i>.<choice>`` per choice. Missing or
    malformed answers go to the service as an empty choice, which it refuses naming the
    question."""
    out: list[int | list[int]] = []
    for i, q in enumerate(course["questions"]):
        if q["multiple"]:
            out.append([j for j in range(len(q["choices"])) if f"q{i}.{j}" in fields])
        else:
            given = fields.get(f"q{i}", "")
            out.append(int(given) if given.isdigit() else [])
    return out


@router.post("/me/training/{course_id}")
def attempt(request: Request, rt: Rt, course_id: str, fields: Form) -> Response:
    """As ``POST /v1/training/{course}/attempts``: graded on the server; the result is shown
    by this response (the service answers it once; a redirect would carry it in a URL)."""
    s = signed_in(rt, request)
    course = _course(rt, s, course_id)
    try:
        result = rt.training.attempt(s.who, course_id, _answers(course, fields))
    except (InvalidInput, RateLimited) as exc:
        return page(request, s, "me/course.html", course=course, **refusal(exc))
    return page(request, s, "me/attempt.html", course=course, result=result)


# -- my sessions -----------------------------------------------------------------------------
@router.get("/me/sessions")
def my_sessions(request: Request, rt: Rt) -> Response:
    """My working sessions, this one marked."""
    s = signed_in(rt, request)
    return page(request, s, "me/sessions.html",
                sessions=rt.users.active_sessions(s.who, s.token))


@router.post("/me/sessions/end-all")
def end_all_sessions(request: Request, rt: Rt) -> Response:
    """As ``POST /v1/auth/logout-all``: every session of mine ends, this one too."""
    s = signed_in(rt, request)
    rt.users.logout_everywhere(s.who)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# -- my break-glass --------------------------------------------------------------------------
def _break_glass(request: Request, s: Signed, status: int = 200, **context: Any) -> Response:
    rt = s.rt
    return page(request, s, "me/break_glass.html", status=status,
                grants=list(reversed(rt.users.break_glass_grants(user_id=s.who.id))),
                now=rt.clock.now(), minutes_max=rt.policy.pack.settings.break_glass_max_minutes,
                **context)


@router.get("/me/break-glass")
def my_break_glass(request: Request, rt: Rt) -> Response:
    """My emergency grants (reason, when, expiry, review outcome), newest first."""
    return _break_glass(request, signed_in(rt, request))


@router.post("/me/break-glass")
def request_break_glass(request: Request, rt: Rt, fields: Form) -> Response:
    """As ``POST /v1/auth/break-glass``: the service checks the role, the reason's length,
    the customers and the monthly limit; the grant is audited and queued for review."""
    s = signed_in(rt, request)
    subject_ids = fields.get("subject_ids", "").replace(",", " ").split()
    minutes = fields.get("minutes", "").strip()
    try:
        if not minutes.isdigit():
            raise InvalidInput("break-glass request rejected",
                               [FieldProblem("minutes", "a whole number of minutes")])
        rt.users.break_glass(s.who, subject_ids, fields.get("justification", ""),
                             int(minutes))
    except _REFUSED as exc:
        return _break_glass(request, s, **refusal(exc), form=fields)
    return RedirectResponse("/console/me/break-glass", status_code=303)


def record_url(subject: str, collection: str, record_id: str, purpose: str) -> str:
    """A record's page, for a purpose."""
    return (f"/console/customers/{quote(subject, safe='')}/records/"
            f"{quote(collection, safe='')}/{quote(record_id, safe='')}?"
            + urlencode({"purpose": purpose}))
