"""Domain errors to HTTP, in one place. Bodies are ``{"error": {"code", "message", "fields"}}``
and never carry a submitted value."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from fiduciary.errors import (
    ConfigurationError,
    FiduciaryError,
    Forbidden,
    Gone,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    WorkflowConflict,
)

log = logging.getLogger("fiduciary.api")

_STATUS: list[tuple[type[FiduciaryError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Gone, 410),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (IntegrityFailure, 409),
    (WorkflowConflict, 409),
    (ConfigurationError, 503),
    (RateLimited, 429),
]
#: The request-scope key of a route's caller check (``deps.requires`` leaves it there).
CALLER_CHECK = "fiduciary.caller_check"
_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type"}


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorDetail(BaseModel):
    code: str = Field(description="The kind of error (`invalid_input`, `forbidden` …)")
    message: str = Field(description="For people; never a submitted value")
    reason: str | None = Field(None, description="A stable, finer code (on 401, 403, 409)")
    fields: list[FieldError] | None = Field(None, description="Every offending field")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


#: What each documented error status means.
WHEN = {401: "No usable credential", 403: "Not permitted (`error.reason` says why)",
         404: "Unknown (or invisible) collection, record, subject or request",
         409: "Integrity failure, or a step the request's state does not allow",
         410: "The subject was erased", 422: "Malformed or rejected input",
         413: "Request body over the configured size (`FIDUCIARY_MAX_BODY_BYTES`)",
         429: "Too many attempts: retry after `Retry-After` seconds (`rate_limited`)"}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: the error statuses it documents, with their body."""
    return {s: {"model": ErrorBody, "description": WHEN[s]} for s in statuses}


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None,
               **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    if fields:
        body["fields"] = fields
    return {"error": body}


def _domain_response(exc: FiduciaryError) -> JSONResponse:
    status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 400)
    extra: dict[str, Any] = {}
    if isinstance(exc, Forbidden | Unauthenticated | WorkflowConflict | RateLimited):
        extra["reason"] = str(exc.reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    fields = [{"field": safe_name(f.field), "reason": f.reason} for f in exc.fields]
    return JSONResponse(error_body(exc.code, exc.message, fields, **extra),
                        status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(FiduciaryError)
    async def _domain(_: Request, exc: FiduciaryError) -> JSONResponse:
        return _domain_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A caller who is refused learns that before anything about their request's form.
        check = request.scope.get(CALLER_CHECK)
        if check is not None:
            try:
                await run_in_threadpool(check)
            except FiduciaryError as refused:
                return _domain_response(refused)
        return invalid_input_response(validation_problems(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
    # No handler for Exception: Starlette would answer from outside the middleware and then
    # re-raise into the server, which logs a traceback whose messages can quote SQL
    # parameters. ``api.middleware`` catches every fault instead (``fault_response``).


# -- validation errors without values ------------------------------------------------------------
#: Pydantic error types whose whole message names only the rule (bounds, choices, pattern).
_WHOLE_MESSAGE = frozenset({
    "missing", "literal_error", "enum", "greater_than", "greater_than_equal", "less_than",
    "less_than_equal", "multiple_of", "string_too_short", "string_too_long", "too_short",
    "too_long", "string_pattern_mismatch", "extra_forbidden", "json_invalid", "bool_parsing",
    "int_parsing", "int_from_float", "float_parsing", "decimal_parsing", "finite_number",
    "datetime_range",
})
#: A quoted fragment of a message ('…' or `…`): in pydantic's messages, often the input's.
_QUOTED = re.compile(r"'[^']*'|`[^`]*`")
_NON_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_name(name: str) -> str:
    """A field name fit to show: submitted keys are names, but never control characters or
    more than 64 characters of them."""
    clean = _NON_PRINTABLE.sub("?", name)
    return clean if len(clean) <= 64 else clean[:63] + "…"


def _reason(err: Mapping[str, Any]) -> str:
    """Why, in pydantic's words without the value: messages of other types can quote part of
    the input (``found `x` at 3``, ``Value error, …``, ``Input tag 'x'``), so only their
    first clause is kept, without quoted fragments."""
    msg = str(err.get("msg", "invalid"))
    if err.get("type") not in _WHOLE_MESSAGE:
        msg = _QUOTED.sub("…", msg.split(",", 1)[0])
    given = err.get("input")
    if isinstance(given, str) and len(given) >= 4 and given in msg:
        return "invalid value"
    return msg


def validation_problems(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic's errors as ``{"field", "reason"}``: where and why, never what was sent."""
    fields = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        fields.append({"field": safe_name(".".join(loc)) or "body", "reason": _reason(err)})
    return fields


def invalid_input_response(fields: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse(error_body("invalid_input",
                                   "request rejected: malformed body or parameters", fields),
                        status_code=422)


def not_found_response() -> JSONResponse:
    return JSONResponse(error_body("not_found", "no such resource"), status_code=404)


def too_large_response(limit: int) -> JSONResponse:
    """413: the body is over ``limit`` bytes. The connection closes: the rest is not read."""
    return JSONResponse(error_body("payload_too_large",
                                   f"request body larger than {limit} bytes"),
                        status_code=413, headers={"Connection": "close"})


def fault_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    """500 for a fault: the log line has the exception's type and a reference, nothing else
    (a driver's message can quote parameters, and logs stay value-free)."""
    ref = uuid.uuid4().hex[:12]
    log.error("internal error ref=%s on %s %s: %s", ref, method,
              _NON_PRINTABLE.sub("?", path)[:200], type(exc).__name__)
    return JSONResponse(error_body("internal_error", f"internal server error (reference {ref})"),
                        status_code=500)
