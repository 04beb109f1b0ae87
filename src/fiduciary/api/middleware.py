"""The request context, as pure ASGI middleware (no extra task or body buffering per request):
an ``X-Request-ID`` for every request, echoed in the response and recorded by every audit event
the request leaves, and ``Cache-Control: no-store`` on every response."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fiduciary.audit.events import RequestContext, request_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        client = scope.get("client")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                # Responses carry customer data: no caching by browsers or proxies.
                headers["Cache-Control"] = "no-store"
            await send(message)

        # The endpoint's worker thread sees this too: the thread pool copies the context.
        token = request_context.set(RequestContext(request_id=request_id,
                                                   client=client[0] if client else None))
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_context.reset(token)
