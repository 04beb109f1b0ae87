"""The console's privacy pages (see ``pages.NAV`` for their paths and permissions)."""

from __future__ import annotations

from fastapi import APIRouter

from fiduciary.console.pages import ConsolePage

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)
