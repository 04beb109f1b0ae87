"""Bench-only endpoints (``FIDUCIARY_BENCH_ENDPOINTS=true``): the plaintext baseline that
``bench/api_reads.py`` measures the vault against. Never enabled in production."""

from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi import APIRouter

from fiduciary.api.deps import Context, OneHopRoute
from fiduciary.api.errors import documented
from fiduciary.api.models import Record
from fiduciary.clock import iso
from fiduciary.errors import NotFound
from fiduciary.storage.schema import records

#: Collection-name prefix of plaintext baseline rows written by the benchmarks.
PLAINTEXT_PREFIX = "bench_plain_"

router = APIRouter(tags=["bench"], route_class=OneHopRoute)


@router.get("/v1/_bench/plain/{collection}/records/{record_id}",
            responses=documented(401, 403, 404, 422))
def get_plain_record(collection: str, record_id: str, ctx: Context) -> Record:
    ctx.caller()
    with ctx.rt.db.read() as conn:
        row = conn.execute(sa.select(records).where(
            records.c.id == record_id,
            records.c.collection == PLAINTEXT_PREFIX + collection)).first()
    if row is None:
        raise NotFound(f"record {record_id} not found", code="record_not_found")
    return Record(id=row.id, subject_id=row.subject_id, collection=collection,
                  data=json.loads(row.clear), created_at=iso(row.created_at),
                  updated_at=iso(row.updated_at), withheld=[])
