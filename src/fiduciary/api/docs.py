"""Interactive API docs at ``/docs`` when ``FIDUCIARY_API_DOCS`` is on (off by default).

Swagger UI's assets come from the installed ``swagger-ui-bundle-v2`` package, never from a
CDN; the page has no inline script, so its Content-Security-Policy allows scripts, styles and
connections from this origin only (and data: images, which Swagger UI's style sheet uses).
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from fiduciary.errors import NotFound

DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": DOCS_CSP}
#: The only files served from the bundle, with their media types.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
          "favicon-32x32.png": "image/png"}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} — API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>
"""
_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
  queryConfigEnabled: false, validatorUrl: null
});
"""


def _bundle() -> Traversable:
    vendor = resources.files("swagger_ui_bundle") / "vendor"
    found = [d for d in vendor.iterdir() if d.name.startswith("swagger-ui-")]
    if len(found) != 1:  # pragma: no cover - a broken install
        raise RuntimeError("swagger-ui-bundle-v2 does not hold exactly one Swagger UI")
    return found[0]


def router(title: str) -> APIRouter:
    bundle = _bundle()
    read = functools.cache(lambda name: (bundle / name).read_bytes())
    docs = APIRouter(include_in_schema=False)
    page = _PAGE.format(title=title)

    @docs.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers=_HEADERS)

    @docs.get("/docs/init.js")
    async def swagger_ui_init() -> Response:
        return Response(_INIT, media_type="text/javascript", headers=_HEADERS)

    @docs.get("/docs/assets/{name}")
    async def swagger_ui_asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            raise NotFound("no such asset")
        return Response(read(name), media_type=media, headers=_HEADERS)

    return docs
