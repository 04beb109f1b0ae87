"""The HTTP edge, as pure ASGI middleware (no extra task per request):

- :class:`RequestContextMiddleware`: an ``X-Request-ID`` for every request, echoed in the
  response and recorded by every audit event the request leaves; ``Cache-Control: no-store``
  and the security headers on every response; and the one way a fault becomes a 500.
- :class:`RequestGuard`: what every request must be before any route sees it — a body no
  larger than ``FIDUCIARY_MAX_BODY_BYTES`` (413, counted while reading, so a larger body is
  never buffered); no control characters in the path (404: no resource has such a name), in
  query parameters or in the strings of a JSON body (422 naming the field; tab and newline
  are allowed in body strings).
"""

from __future__ import annotations

import json
import re
import uuid
from email.message import Message as MimeHeader
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fiduciary.api.errors import (
    fault_response,
    invalid_input_response,
    not_found_response,
    safe_name,
    too_large_response,
)
from fiduciary.audit.events import RequestContext, request_context
from fiduciary.console.speakup import PREFIX as CONSOLE_SPEAKUP_PREFIX

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: The speak-up channel: its requests leave no client address in the request context (so in
#: no audit event), take no caller-chosen request id, are not access-logged, and a fault
#: there is logged as its reference alone. The console's pages of the channel too.
SPEAKUP_PREFIX = "/v1/speakup"


def is_speakup(path: str) -> bool:
    return any(path == p or path.startswith(p + "/")
               for p in (SPEAKUP_PREFIX, CONSOLE_SPEAKUP_PREFIX))

#: Nothing loads, runs, connects, frames or submits. The two HTML pages (records of processing,
#: access package) each carry one inline style sheet, which is all they need; with no source
#: for images, fonts or connections, injected CSS could not send anything anywhere either.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
#: On every response. A route may set a narrower-purpose Content-Security-Policy of its own
#: (the optional /docs page does); every other header is fixed.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Responses carry customer data: no caching by browsers or proxies.
    "Cache-Control": "no-store",
}


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        quiet = is_speakup(scope["path"])
        given = "" if quiet else Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        client = None if quiet else scope.get("client")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            await send(message)

        # The endpoint's worker thread sees this too: the thread pool copies the context.
        token = request_context.set(RequestContext(request_id=request_id,
                                                   client=client[0] if client else None))
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # The only path of a 500: logged as type and reference, answered with the error
            # body, and not re-raised — the server would log a traceback whose messages can
            # quote SQL parameters. Once a response has started, the server closes it.
            response = (fault_response("-", SPEAKUP_PREFIX, exc) if quiet
                        else fault_response(scope["method"], scope["path"], exc))
            if not started:
                await response(scope, receive, send_with_headers)
        finally:
            request_context.reset(token)


# -- input guard -----------------------------------------------------------------------------------
#: In a URL: any C0 or C1 control character (tab and newline included).
_URL_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: In a body string: control characters but tab and newline, and lone surrogates (not text).
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Raw JSON that may decode to one of those: an escape (\b, \f, \r, \u0000-\u001f, \u007f-
#: \u009f, a surrogate) or a raw DEL or C1 character. Only then is the body parsed here.
_SUSPECT = re.compile(rb"\\(?:[bfr]|u00[01][0-9a-f]|u007f|u00[89][0-9a-f]|ud[89a-f][0-9a-f]{2})"
                      rb"|\x7f|\xc2[\x80-\x9f]", re.IGNORECASE)
#: Objects of record content: their keys are data-map fields, named as the vault names them.
_RECORD_CONTENT = frozenset({"data", "where"})
_CONTROL_REASON = "control characters are not allowed (tab and newline are)"
_URL_REASON = "control characters are not allowed"
_MAX_PROBLEMS = 50


def _query_problems(scope: Scope) -> list[dict[str, str]]:
    problems = []
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            if _URL_CONTROL.search(key):
                problems.append({"field": "query", "reason": "a parameter name has control "
                                                            "characters"})
            elif _URL_CONTROL.search(value) or _SURROGATE.search(value):
                problems.append({"field": safe_name(key), "reason": _URL_REASON})
    return problems


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides to parse a body as JSON: no content type, or (application/)…json."""
    if not content_type:
        return True
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


def _field(path: list[str]) -> str:
    if len(path) > 1 and path[0] in _RECORD_CONTENT:
        path = path[1:]
    return safe_name(".".join(path)) or "body"


def _text_problem(text: str) -> str | None:
    if _TEXT_CONTROL.search(text):
        return _CONTROL_REASON
    if _SURROGATE.search(text):
        return "not valid Unicode text"
    return None


def _json_problems(body: bytes) -> list[dict[str, str]]:
    """Every string (and key) of the body with a control character, by its path; a body
    that is not JSON is left to the route's own validation."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    problems: dict[str, str] = {}
    stack: list[tuple[Any, list[str]]] = [(doc, [])]
    while stack and len(problems) < _MAX_PROBLEMS:
        value, path = stack.pop()
        if isinstance(value, str):
            reason = _text_problem(value)
            if reason:
                problems.setdefault(_field(path), reason)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _text_problem(key):
                    problems.setdefault(_field(path), "a key has control characters")
                else:
                    stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, str(i)]) for i, item in enumerate(value))
    return [{"field": f, "reason": r} for f, r in sorted(problems.items())]


class RequestGuard:
    """Size and character rules for every request, before routing."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _URL_CONTROL.search(scope["path"]):
            # No resource has such a name: answered like any other unknown id.
            await not_found_response()(scope, receive, send)
            return
        problems = _query_problems(scope)
        if problems:
            await invalid_input_response(problems)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.limit:
            # Refused before a byte of the body is read.
            await too_large_response(self.limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:  # chunked, or longer than declared
                await too_large_response(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _SUSPECT.search(body) and _is_json(headers.get("content-type")):
            problems = _json_problems(body)
            if problems:
                await invalid_input_response(problems)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)
