"""Data subjects (the insurer's customers) and their records."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from fiduciary.api.deps import Context, OneHopRoute
from fiduciary.api.errors import documented
from fiduciary.api.models import PurposeParam, RecordList, Timestamp
from fiduciary.clock import iso
from fiduciary.vault.store import Subject as StoredSubject

router = APIRouter(prefix="/v1/subjects", tags=["subjects"], responses=documented(401, 403),
                   route_class=OneHopRoute)

class Subject(BaseModel):
    id: str
    status: str
    created_at: Timestamp

    @classmethod
    def of(cls, s: StoredSubject) -> Subject:
        return cls(id=s.id, status=s.status, created_at=iso(s.created_at))


@router.post("", status_code=201)
def create_subject(ctx: Context) -> Subject:
    return Subject.of(ctx.rt.vault.create_subject(ctx.caller()))


@router.get("/{subject_id}", responses=documented(404, 410, 422))
def get_subject(subject_id: str, ctx: Context) -> Subject:
    return Subject.of(ctx.rt.vault.get_subject(ctx.caller(), subject_id))


@router.get("/{subject_id}/records", responses=documented(404, 410, 422))
def list_subject_records(subject_id: str, ctx: Context, purpose: PurposeParam = None
                         ) -> RecordList:
    """The subject's records in the collections used for the purpose."""
    return RecordList.of(ctx.rt.vault.list_subject_records(ctx.caller(), subject_id, purpose))
