"""Batch inserts shared by the importer and the plaintext baseline of the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from fiduciary.storage.schema import blind_index, records, subjects


@dataclass
class Batch:
    subjects: list[dict[str, Any]] = field(default_factory=list)
    #: Key-store rows of new subjects: stored in the key store, never in the database.
    subject_keys: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    index: list[dict[str, Any]] = field(default_factory=list)
    #: subject id -> new attributes JSON, for existing subjects whose attributes change.
    subject_attributes: dict[str, str] = field(default_factory=dict)

    def extend(self, other: Batch) -> None:
        self.subjects += other.subjects
        self.subject_keys += other.subject_keys
        self.records += other.records
        self.index += other.index
        self.subject_attributes.update(other.subject_attributes)


def insert_batch(conn: Connection, batch: Batch) -> None:
    for table, rows in ((subjects, batch.subjects), (records, batch.records),
                        (blind_index, batch.index)):
        if rows:
            conn.execute(table.insert(), rows)
    for subject_id, attributes in batch.subject_attributes.items():
        conn.execute(subjects.update().where(subjects.c.id == subject_id)
                     .values(attributes=attributes))
