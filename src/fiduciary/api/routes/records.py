"""Records of a collection, search, and the data map that defines them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, RootModel

from fiduciary.api.deps import Context, OneHopRoute
from fiduciary.api.errors import documented
from fiduciary.api.models import PurposeParam, Record, RecordList
from fiduciary.vault.service import MAX_SEARCH_LIMIT

router = APIRouter(responses=documented(401, 403), route_class=OneHopRoute)
_RECORDS = "/v1/collections/{collection}/records"
_RECORD = _RECORDS + "/{record_id}"


class CreateRecord(BaseModel):
    subject_id: str = Field(description="The owning data subject")
    data: dict[str, Any]


class UpdateRecord(BaseModel):
    data: dict[str, Any] = Field(description="Partial: null removes an optional field")


class SearchRequest(BaseModel):
    where: dict[str, Any] = Field(description="field: value, all must match (equality)")
    limit: int = Field(100, ge=1, le=MAX_SEARCH_LIMIT)


class Purpose(BaseModel):
    description: str
    consent_required: bool
    pseudonymised_only: bool


class DataMapDoc(BaseModel):
    source: str
    purposes: dict[str, Purpose]
    collections: dict[str, dict[str, Any]] = Field(
        description="name: description, lawful basis, retention and fields")


@router.post(_RECORDS, status_code=201, tags=["records"], responses=documented(404, 410, 422))
def create_record(collection: str, body: CreateRecord, ctx: Context,
                  purpose: PurposeParam = None) -> Record:
    return Record.of(ctx.rt.vault.create_record(ctx.caller(), collection, body.subject_id,
                                                body.data, purpose))


@router.get(_RECORD, tags=["records"], responses=documented(404, 409, 410, 422))
def get_record(collection: str, record_id: str, ctx: Context,
               purpose: PurposeParam = None) -> Record:
    return Record.of(ctx.rt.vault.get_record(ctx.caller(), collection, record_id, purpose))


@router.patch(_RECORD, tags=["records"], responses=documented(404, 409, 410, 422))
def update_record(collection: str, record_id: str, body: UpdateRecord, ctx: Context,
                  purpose: PurposeParam = None) -> Record:
    return Record.of(ctx.rt.vault.update_record(ctx.caller(), collection, record_id,
                                                body.data, purpose))


@router.delete(_RECORD, tags=["records"], status_code=204, response_class=Response,
               responses=documented(404, 409, 410, 422))
def delete_record(collection: str, record_id: str, ctx: Context,
                  purpose: PurposeParam = None) -> None:
    """Its blind-index entries go with it."""
    ctx.rt.vault.delete_record(ctx.caller(), collection, record_id, purpose)


class Claimed(RootModel[dict[str, Any]]):
    """field: value as the caller stated it; all must match."""


class Verification(BaseModel):
    match: bool = Field(description="Every field given equals the record's value")


@router.post(_RECORD + "/verify", tags=["records"],
             responses=documented(404, 409, 410, 422, 429))
def verify_record(collection: str, record_id: str, claimed: Claimed, ctx: Context,
                  purpose: PurposeParam = None) -> Verification:
    """Confirm what a caller says (their date of birth, the last digits of an SSN as a whole
    value) against the record without revealing it; a few attempts per record and day."""
    return Verification(match=ctx.rt.vault.verify(ctx.caller(), collection, record_id,
                                                  claimed.root, purpose))


@router.post("/v1/collections/{collection}/search", tags=["records"],
             responses=documented(404, 409, 422))
def search_records(collection: str, body: SearchRequest, ctx: Context,
                   purpose: PurposeParam = None) -> RecordList:
    """Search values travel in the body only, never in the URL."""
    return RecordList.of(ctx.rt.vault.search(ctx.caller(), collection, body.where, purpose,
                                             limit=body.limit))


@router.get("/v1/datamap", tags=["datamap"])
def get_datamap(ctx: Context) -> DataMapDoc:
    """The data map in force."""
    ctx.caller()
    return DataMapDoc.model_validate(ctx.rt.datamap.as_dict())
