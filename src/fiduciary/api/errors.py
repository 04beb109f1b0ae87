"""Domain errors to HTTP, in one place. Bodies are ``{"error": {"code", "message", "fields"}}``
and never carry a submitted value."""

from __future__ import annotations

import logging
import uuid
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


_WHEN = {401: "No usable credential", 403: "Not permitted (`error.reason` says why)",
         404: "Unknown (or invisible) collection, record, subject or request",
         409: "Integrity failure, or a step the request's state does not allow",
         410: "The subject was erased", 422: "Malformed or rejected input",
         429: "Too many attempts: retry after `Retry-After` seconds (`rate_limited`)"}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: the error statuses it documents, with their body."""
    return {s: {"model": ErrorBody, "description": _WHEN[s]} for s in statuses}


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
    return JSONResponse(
        error_body(exc.code, exc.message, [f.as_dict() for f in exc.fields], **extra),
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
        # Pydantic's errors echo the input; keep only where and why.
        fields = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            fields.append({"field": ".".join(loc) or "body", "reason": str(err.get("msg"))})
        return JSONResponse(
            error_body("invalid_input", "request rejected: malformed body or parameters",
                       fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        # Type only: a driver's message can quote parameters, and logs must stay value-free.
        log.error("internal error ref=%s on %s %s: %s", ref, request.method, request.url.path,
                  type(exc).__name__)
        return JSONResponse(error_body("internal_error",
                                       f"internal server error (reference {ref})"),
                            status_code=500)
