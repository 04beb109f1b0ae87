"""The FastAPI application: routers per feature, auth as a dependency, errors mapped here."""


from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fiduciary import __version__
from fiduciary.access import Principal
from fiduciary.api import errors
from fiduciary.runtime import Runtime

_bearer = HTTPBearer(auto_error=False)
PurposeParam = Annotated[str | None, Query(description="Why the data is processed")]


class CreateRecord(BaseModel):
    subject_id: str = Field(description="The owning data subject")
    data: dict[str, Any]


class UpdateRecord(BaseModel):
    data: dict[str, Any]


class SearchRequest(BaseModel):
    where: dict[str, Any] = Field(description="field: value, all must match (equality)")
    limit: int = 100


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="Fiduciary", version=__version__,
                  description="Customer-data vault for insurers")
    errors.install(app)
    vault = rt.vault

    def principal(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return rt.api_keys.authenticate(creds.credentials if creds else None)

    Caller = Annotated[Principal, Depends(principal)]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        rt.db.ping()
        return {"status": "ok", "version": __version__}

    @app.post("/v1/subjects", status_code=201, tags=["subjects"])
    def create_subject(_: Caller) -> dict[str, Any]:
        s = vault.create_subject()
        return {"id": s.id, "status": s.status, "created_at": s.created_at.isoformat()}

    @app.get("/v1/subjects/{subject_id}", tags=["subjects"])
    def get_subject(subject_id: str, _: Caller) -> dict[str, Any]:
        s = vault.get_subject(subject_id)
        return {"id": s.id, "status": s.status, "created_at": s.created_at.isoformat()}

    @app.get("/v1/subjects/{subject_id}/records", tags=["subjects"])
    def subject_records(subject_id: str, _: Caller, purpose: PurposeParam = None
                        ) -> dict[str, Any]:
        return {"items": [r.as_dict() for r in vault.list_subject_records(subject_id, purpose)]}

    @app.post("/v1/collections/{collection}/records", status_code=201, tags=["records"])
    def create_record(collection: str, body: CreateRecord, _: Caller,
                      purpose: PurposeParam = None) -> dict[str, Any]:
        return vault.create_record(collection, body.subject_id, body.data, purpose).as_dict()

    @app.get("/v1/collections/{collection}/records/{record_id}", tags=["records"])
    def get_record(collection: str, record_id: str, _: Caller,
                   purpose: PurposeParam = None) -> dict[str, Any]:
        return vault.get_record(collection, record_id, purpose).as_dict()

    @app.patch("/v1/collections/{collection}/records/{record_id}", tags=["records"])
    def update_record(collection: str, record_id: str, body: UpdateRecord, _: Caller,
                      purpose: PurposeParam = None) -> dict[str, Any]:
        return vault.update_record(collection, record_id, body.data, purpose).as_dict()

    @app.delete("/v1/collections/{collection}/records/{record_id}", status_code=204,
                tags=["records"])
    def delete_record(collection: str, record_id: str, _: Caller,
                      purpose: PurposeParam = None) -> Response:
        vault.delete_record(collection, record_id, purpose)
        return Response(status_code=204)

    @app.post("/v1/collections/{collection}/search", tags=["records"])
    def search(collection: str, body: SearchRequest, _: Caller,
               purpose: PurposeParam = None) -> dict[str, Any]:
        found = vault.search(collection, body.where, purpose, limit=body.limit)
        return {"items": [r.as_dict() for r in found]}

    @app.get("/v1/datamap", tags=["datamap"])
    def datamap(_: Caller) -> dict[str, Any]:
        return rt.datamap.as_dict()

    if rt.settings.bench_endpoints:
        from fiduciary.api.bench import install as install_bench

        install_bench(app, rt, principal)

    @app.middleware("http")
    async def _no_store(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        # Responses carry customer data: no caching by browsers or proxies.
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
