"""Bench-only endpoints (``FIDUCIARY_BENCH_ENDPOINTS=true``): the plaintext baseline that
``bench/api_reads.py`` measures the vault against. Never enabled in production."""


import json
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI

from fiduciary.access import Principal
from fiduciary.errors import NotFound
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import records

#: Collection-name prefix of plaintext baseline rows written by the benchmarks.
PLAINTEXT_PREFIX = "bench_plain_"


def install(app: FastAPI, rt: Runtime, principal: Callable[..., Principal]) -> None:
    @app.get("/v1/_bench/plain/{collection}/records/{record_id}", tags=["bench"])
    def plain_record(collection: str, record_id: str,
                     _: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
        with rt.db.read() as conn:
            row = conn.execute(sa.select(records).where(
                records.c.id == record_id,
                records.c.collection == PLAINTEXT_PREFIX + collection)).first()
        if row is None:
            raise NotFound(f"record {record_id} not found", code="record_not_found")
        return {"id": row.id, "subject_id": row.subject_id, "collection": collection,
                "data": json.loads(row.clear), "created_at": row.created_at.isoformat(),
                "updated_at": row.updated_at.isoformat(), "withheld": []}
