"""Operations: the liveness probe."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from fiduciary import __version__
from fiduciary.api.deps import OneHopRoute, Rt

router = APIRouter(tags=["ops"], route_class=OneHopRoute)


class Health(BaseModel):
    status: str
    version: str


@router.get("/healthz")
def healthz(rt: Rt) -> Health:
    """200 when the database answers."""
    rt.db.ping()
    return Health(status="ok", version=__version__)
