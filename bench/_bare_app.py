"""The baseline of ``bench/api_reads.py``: what a team would write instead of Fiduciary — a
bare FastAPI sync route reading one plaintext row through SQLAlchemy, no authentication, no
policy, no audit — served by uvicorn with the settings ``fiduciary serve`` uses.

    python bench/_bare_app.py DATABASE_URL PORT
"""

from __future__ import annotations

import json
import sys
from typing import Any

import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOST = "127.0.0.1"


def make_app(url: str) -> FastAPI:
    engine = sa.create_engine(url)
    rows = sa.table("records", sa.column("id"), sa.column("subject_id"),
                    sa.column("collection"), sa.column("clear"))
    query = sa.select(rows.c.id, rows.c.subject_id, rows.c.clear).where(
        rows.c.id == sa.bindparam("id"), rows.c.collection == sa.bindparam("collection"))
    app = FastAPI()

    @app.get("/bare/{collection}/records/{record_id}")
    def get_record(collection: str, record_id: str) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(query, {"id": record_id, "collection": collection}).first()
        if row is None:
            raise HTTPException(404, "record not found")
        return {"id": row.id, "subject_id": row.subject_id, "data": json.loads(row.clear)}

    # The ceiling: a bare Starlette route (no FastAPI parameter or response handling), one
    # SELECT on a pooled driver connection, the row's JSON text sent as it is stored.
    sql = str(query.compile(dialect=engine.dialect))
    positional = engine.dialect.positional

    def ceiling(request: Request) -> Response:
        params = request.path_params
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(sql, (params["record_id"], params["collection"]) if positional
                        else {"id": params["record_id"], "collection": params["collection"]})
            row = cur.fetchone()
        finally:
            raw.close()
        if row is None:
            return Response(status_code=404)
        return Response(f'{{"id":"{row[0]}","subject_id":"{row[1]}","data":{row[2]}}}',
                        media_type="application/json")

    app.router.routes.insert(0, Route("/ceiling/{collection}/records/{record_id}", ceiling))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host=HOST, port=int(sys.argv[2]), log_config=None,
                log_level="warning", server_header=False)
