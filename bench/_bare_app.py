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

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host=HOST, port=int(sys.argv[2]), log_config=None,
                log_level="warning", server_header=False)
