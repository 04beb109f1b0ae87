"""The FastAPI application: one router per feature, domain errors mapped to HTTP in ``errors``
only, and a lifespan that runs the runtime's background work (audit sequencer, retention).

``uvicorn fiduciary.api.app:create_app --factory`` serves the data directory of
``FIDUCIARY_DATA_DIR`` (and the other ``FIDUCIARY_*`` settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute

from fiduciary import __version__, console, logs
from fiduciary.api import bench, errors
from fiduciary.api.middleware import SPEAKUP_PREFIX, RequestContextMiddleware, RequestGuard
from fiduciary.api.routes import (
    admin,
    alerts,
    audit,
    auth,
    break_glass,
    compliance,
    incidents,
    metrics,
    ops,
    privacy,
    records,
    reviews,
    speakup,
    subjects,
    training,
)
from fiduciary.config import Settings
from fiduciary.runtime import Runtime, open_runtime


def create_app(rt: Runtime | None = None) -> FastAPI:
    """The API over ``rt``; with none, over a runtime opened from ``Settings()`` at startup
    and closed at shutdown."""
    settings = rt.settings if rt is not None else Settings()
    # Interactive docs only by setting, from local assets (api.docs); /openapi.json always.
    app = FastAPI(title="Fiduciary", version=__version__,
                  description="Customer-data vault for insurers",
                  lifespan=_lifespan(rt, settings), generate_unique_id_function=_operation_id,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.runtime = rt
    errors.install(app)
    logs.quiet_access_log(SPEAKUP_PREFIX)  # no line of a speak-up request: address, time
    # Added last, runs first: the request context (and its 500s) wraps the input guard.
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    # Routes are matched in order, one after another (FastAPI 0.165 descends into every
    # included router): the hot path, records, goes first; no other feature's paths overlap.
    if settings.bench_endpoints:
        app.include_router(bench.router)  # first too: its plaintext GET is records' baseline
    for feature in (records, ops, auth, subjects, audit, privacy, admin, break_glass, alerts,
                    incidents, speakup, reviews, training, compliance):
        app.include_router(feature.router)
    app.include_router(metrics.router)  # Prometheus scrape; not in /openapi.json
    console.install(app)  # the browser console under /console; not in /openapi.json
    if settings.api_docs:
        from fiduciary.api import docs  # loaded only when served: it reads the bundle's files

        app.include_router(docs.router(app.title))
    app.openapi = _with_413(app)  # type: ignore[method-assign]
    return app


def _with_413(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's document, plus the 413 that every operation taking a body may answer."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            too_large = {"description": errors.WHEN[413], "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
            for ops in base().get("paths", {}).values():
                for op in ops.values():
                    if "requestBody" in op:
                        op["responses"].setdefault("413", too_large)
        return app.openapi_schema or base()

    return openapi


def _operation_id(route: APIRoute) -> str:
    """The handler's name: short and stable (get_record, create_dsr …)."""
    return route.name


def _lifespan(given: Runtime | None, settings: Settings
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Starts the runtime's background work at startup and stops it at shutdown (which signs
    a last checkpoint); a runtime the app opened itself is closed too."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = given
        if rt is None:
            rt = app.state.runtime = await to_thread.run_sync(open_runtime, settings)
            logs.configure(settings.log_level, settings.log_dir)  # as `fiduciary serve`
        rt.start()
        try:
            yield
        finally:
            # Stopping signs a last checkpoint (a failure there is logged, not raised).
            await to_thread.run_sync(rt.close if given is None else rt.stop)

    return lifespan
