"""The console's answer to an address it does not have: an HTML 404 page (a browser user
gets a page with the navigation, not the API's JSON), included after every other console
route. Signed out, it sends the browser to sign in, as every other page does: an unknown
address tells a visitor nothing about which pages exist."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from fiduciary.console.pages import ConsolePage, Rt, error_page, signed_in
from fiduciary.errors import NotFound

router = APIRouter(prefix="/console", route_class=ConsolePage, include_in_schema=False)


@router.api_route("/{rest:path}", methods=["GET", "POST"])
def not_found(request: Request, rt: Rt, rest: str) -> Response:
    s = signed_in(rt, request, initial_password_ok=True)
    return error_page(request, NotFound("there is no such page in the console"), s.who)
