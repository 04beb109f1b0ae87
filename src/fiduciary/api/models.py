"""Response models more than one feature returns. A model keeps exactly the keys of what the
services return (``as_dict``); content the data map defines stays ``dict[str, Any]``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field

from fiduciary.vault.records import Record as StoredRecord

#: A timestamp as the services format it (RFC 3339, UTC).
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]

#: Why the data is processed: every route to records states it.
PurposeParam = Annotated[str | None, Query(description="Why the data is processed")]


class Withheld(BaseModel):
    field: str
    reason: str = Field(description="Why the field is not in ``data`` (a 403 reason code)")


class Record(BaseModel):
    id: str
    subject_id: str
    collection: str
    data: dict[str, Any] = Field(description="The fields the caller may see for the purpose, "
                                 "masked as the policy decides")
    created_at: Timestamp
    updated_at: Timestamp
    withheld: list[Withheld]

    @classmethod
    def of(cls, record: StoredRecord) -> Record:
        return cls.model_validate(record.as_dict())


class RecordList(BaseModel):
    items: list[Record]

    @classmethod
    def of(cls, records: list[StoredRecord]) -> RecordList:
        return cls.model_validate({"items": [r.as_dict() for r in records]})
