"""The oversight console: server-rendered pages under ``/console`` over the same services as
the API (``pages``), its cookie session and CSRF tokens (``session``), templates and one
stylesheet of our own, and htmx vendored at a pinned version (no CDN, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fiduciary import logs
from fiduciary.console import (
    admin,
    compliance,
    dashboard,
    fallback,
    me,
    privacy,
    security,
    speakup,
)
from fiduciary.console.pages import router

__all__ = ["HTMX", "SECURITY_HEADERS", "install"]

#: The vendored htmx (npm ``htmx.org``), checked against its SHA-256 by the tests.
HTMX = "htmx-2.0.8.min.js"
PREFIX = "/console"
#: On every console response: no inline script or style, no framing, no referrer, no cache.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'; object-src 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}


class ConsoleHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response under ``/console`` (pages, static
    files, errors and 404s alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode("latin-1").lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    """Mounts the console's pages and static files on ``app``."""
    app.include_router(router)
    for section in (dashboard, privacy, compliance, security, admin, me):
        app.include_router(section.router)
    app.include_router(speakup.public)
    app.include_router(speakup.cases_router)
    logs.quiet_access_log(speakup.PREFIX)  # a reporter's address and time: never logged
    app.mount(PREFIX + "/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="console-static")
    app.include_router(fallback.router)  # last: any other /console address is an HTML 404
    app.add_middleware(ConsoleHeaders)
