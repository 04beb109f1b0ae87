"""The record service: create, read, update, delete, list and search customer records, with
data minimisation on the way in and per-field encryption at rest."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.clock import Clock
from fiduciary.crypto.blind_index import BlindIndexer
from fiduciary.crypto.keyring import Keyring
from fiduciary.datamap import CollectionSpec, DataMap
from fiduciary.datamap.values import ValueRejected, validate
from fiduciary.errors import FieldProblem, Forbidden, Gone, InvalidInput, NotFound
from fiduciary.storage import Database
from fiduciary.storage.schema import blind_index, records, subject_keys, subjects
from fiduciary.vault.keys import SubjectKeys
from fiduciary.vault.records import Record, RecordCodec, _dumps

MAX_SEARCH_LIMIT = 1000
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

_RECORD_COLUMNS = (
    records.c.id, records.c.subject_id, records.c.collection, records.c.clear, records.c.sealed,
    records.c.created_at, records.c.updated_at, subject_keys.c.dek_version,
    subject_keys.c.kek_version, subject_keys.c.wrapped_dek,
)
_RECORD_FROM = records.join(subject_keys, subject_keys.c.subject_id == records.c.subject_id)


@dataclass(frozen=True)
class Subject:
    id: str
    status: str
    created_at: datetime


def new_id() -> str:
    return str(uuid.uuid4())


def is_id(value: object) -> bool:
    """Ids are UUIDs; anything else is unknown without asking the database (which may reject
    bytes such as NUL outright)."""
    return isinstance(value, str) and bool(_ID.match(value))


class VaultService:
    """Constructed with its storage, data map, keyring and clock (see ``fiduciary.runtime``)."""

    def __init__(self, db: Database, datamap: DataMap, keyring: Keyring, clock: Clock,
                 keys: SubjectKeys | None = None) -> None:
        self.db = db
        self.datamap = datamap
        self.clock = clock
        self.keys = keys or SubjectKeys(keyring, clock)
        self.codec = RecordCodec(BlindIndexer(keyring.index_key()))

    # -- subjects ------------------------------------------------------------------------------
    def create_subject(self) -> Subject:
        with self.db.write() as conn:
            return self._insert_subject(conn)

    def _insert_subject(self, conn: Connection) -> Subject:
        subject = Subject(id=new_id(), status="active", created_at=self.clock.now())
        key_row, _ = self.keys.new_key_row(subject.id)
        conn.execute(subjects.insert(), [{"id": subject.id, "status": subject.status,
                                          "created_at": subject.created_at}])
        conn.execute(subject_keys.insert(), [key_row])
        return subject

    def get_subject(self, subject_id: str) -> Subject:
        with self.db.read() as conn:
            return self._subject(conn, subject_id)

    def _subject(self, conn: Connection, subject_id: str) -> Subject:
        row = None
        if is_id(subject_id):
            row = conn.execute(sa.select(subjects).where(subjects.c.id == subject_id)).first()
        if row is None:
            raise NotFound(f"subject {subject_id} not found", code="subject_not_found")
        if row.status == "erased":
            raise Gone(f"subject {subject_id} has been erased")
        return Subject(id=row.id, status=row.status, created_at=row.created_at)

    # -- checks --------------------------------------------------------------------------------
    def collection(self, name: str) -> CollectionSpec:
        spec = self.datamap.collections.get(name)
        if spec is None:
            raise NotFound(f"collection {name!r} is not declared in the data map",
                           code="collection_not_found")
        return spec

    def check_purpose(self, spec: CollectionSpec | None, purpose: str | None) -> str:
        """The purpose must be declared; for a collection, declared for one of its fields."""
        if not purpose:
            raise InvalidInput("a purpose is required for every data call",
                               [FieldProblem("purpose", "required")])
        if purpose not in self.datamap.purposes:
            raise InvalidInput(
                f"purpose {purpose!r} is not declared in the data map",
                [FieldProblem("purpose",
                              f"unknown purpose (declared: {', '.join(self.datamap.purposes)})")],
            )
        if spec is not None and not any(purpose in f.purposes for f in spec.fields.values()):
            raise Forbidden(f"collection {spec.name!r} is not used for purpose {purpose!r}",
                            reason="purpose_not_allowed")
        return purpose

    def validate_write(
        self, spec: CollectionSpec, data: Any, purpose: str, *, partial: bool
    ) -> tuple[dict[str, Any], set[str]]:
        """Return (canonical values to store, fields to remove) or raise naming every problem."""
        if not isinstance(data, Mapping):
            raise InvalidInput("data must be an object of field: value",
                               [FieldProblem("data", "expected an object")])
        problems: list[FieldProblem] = []
        values: dict[str, Any] = {}
        removed: set[str] = set()
        for name, value in data.items():
            f = spec.fields.get(name)
            if f is None:
                problems.append(FieldProblem(
                    name, f"not declared in the data map for collection {spec.name!r}"))
                continue
            if purpose not in f.purposes:
                problems.append(FieldProblem(name, f"not allowed for purpose {purpose!r}"))
                continue
            if value is None:
                if f.required:
                    problems.append(FieldProblem(name, "required; cannot be empty"))
                else:
                    removed.add(name)
                continue
            try:
                values[name] = validate(f, value)
            except ValueRejected as exc:
                problems.append(FieldProblem(name, str(exc)))
        if not partial:
            for f in spec.required_fields:
                if f.name not in data:
                    problems.append(FieldProblem(f.name, "required"))
        elif not data:
            problems.append(FieldProblem("data", "names no field to change"))
        if problems:
            raise InvalidInput.from_problems(problems, what="write")
        return values, removed

    # -- records -------------------------------------------------------------------------------
    def create_record(self, collection: str, subject_id: Any, data: Any,
                      purpose: str | None) -> Record:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        problems: list[FieldProblem] = []
        try:
            values, _ = self.validate_write(spec, data, purpose, partial=False)
        except InvalidInput as exc:
            problems = exc.fields
            values = {}
        if not isinstance(subject_id, str) or not subject_id:
            problems.insert(0, FieldProblem("subject_id", "required"))
        if problems:
            raise InvalidInput.from_problems(problems, what="write")
        now = self.clock.now()
        record_id = new_id()
        with self.db.write() as conn:
            row = conn.execute(
                sa.select(subjects.c.status).where(subjects.c.id == subject_id)
            ).first() if is_id(subject_id) else None
            if row is None or row.status != "active":
                reason = "unknown subject" if row is None else "subject has been erased"
                raise InvalidInput.from_problems([FieldProblem("subject_id", reason)], "write")
            cipher = self.keys.cipher_for(conn, subject_id)
            clear, sealed = self.codec.seal(spec, record_id, cipher, values)
            conn.execute(records.insert(), [{
                "id": record_id, "subject_id": subject_id, "collection": spec.name,
                "clear": _dumps(clear), "sealed": _dumps(sealed),
                "created_at": now, "updated_at": now,
            }])
            index = self.codec.index_rows(spec, record_id, subject_id, values)
            if index:
                conn.execute(blind_index.insert(), index)
        return Record(record_id, subject_id, spec.name,
                      {k: v for k, v in values.items() if purpose in spec.fields[k].purposes},
                      now, now, self._withheld(spec, purpose, values))

    def get_record(self, collection: str, record_id: str, purpose: str | None) -> Record:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        with self.db.read() as conn:
            row = self._record_row(conn, spec, record_id)
            return self._open(row, spec, purpose)

    def update_record(self, collection: str, record_id: str, data: Any,
                      purpose: str | None) -> Record:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        values, removed = self.validate_write(spec, data, purpose, partial=True)
        with self.db.write() as conn:
            row = self._record_row(conn, spec, record_id)
            cipher = self.keys.open_row(row.subject_id, row.dek_version, row.kek_version,
                                        row.wrapped_dek)
            clear: dict[str, Any] = json.loads(row.clear)
            sealed: dict[str, str] = json.loads(row.sealed)
            new_clear, new_sealed = self.codec.seal(spec, record_id, cipher, values)
            for name in removed | set(values):
                clear.pop(name, None)
                sealed.pop(name, None)
            clear.update(new_clear)
            sealed.update(new_sealed)
            now = self.clock.now()
            conn.execute(records.update().where(records.c.id == record_id).values(
                clear=_dumps(clear), sealed=_dumps(sealed), updated_at=now))
            touched = [n for n in removed | set(values) if spec.fields[n].searchable]
            if touched:
                conn.execute(blind_index.delete().where(blind_index.c.record_id == record_id,
                                                        blind_index.c.field.in_(touched)))
                index = self.codec.index_rows(spec, record_id, row.subject_id, values)
                if index:
                    conn.execute(blind_index.insert(), index)
            updated = self._record_row(conn, spec, record_id)
            return self._open(updated, spec, purpose)

    def delete_record(self, collection: str, record_id: str, purpose: str | None) -> None:
        spec = self.collection(collection)
        self.check_purpose(spec, purpose)
        with self.db.write() as conn:
            self._record_row(conn, spec, record_id)
            conn.execute(blind_index.delete().where(blind_index.c.record_id == record_id))
            conn.execute(records.delete().where(records.c.id == record_id))

    def list_subject_records(self, subject_id: str, purpose: str | None) -> list[Record]:
        purpose = self.check_purpose(None, purpose)
        with self.db.read() as conn:
            self._subject(conn, subject_id)
            rows = conn.execute(
                sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
                .where(records.c.subject_id == subject_id)
                .order_by(records.c.collection, records.c.created_at, records.c.id)
            ).all()
            out = []
            for row in rows:
                spec = self.datamap.collections.get(row.collection)
                if spec is None or not any(purpose in f.purposes for f in spec.fields.values()):
                    continue
                out.append(self._open(row, spec, purpose))
            return out

    def search(self, collection: str, where: Any, purpose: str | None,
               limit: int = 100) -> list[Record]:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        if not isinstance(where, Mapping) or not where:
            raise InvalidInput("where must name at least one searchable field",
                               [FieldProblem("where", "expected a non-empty object")])
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidInput("limit out of range",
                               [FieldProblem("limit", f"between 1 and {MAX_SEARCH_LIMIT}")])
        problems: list[FieldProblem] = []
        digests: list[tuple[str, bytes]] = []
        for name, value in where.items():
            f = spec.fields.get(name)
            if f is None:
                problems.append(FieldProblem(name, "not declared in the data map"))
            elif not f.searchable:
                problems.append(FieldProblem(name, "not searchable"))
            elif purpose not in f.purposes:
                problems.append(FieldProblem(name, f"not allowed for purpose {purpose!r}"))
            else:
                try:
                    digests.append((name, self.codec.digest(spec, name, validate(f, value))))
                except ValueRejected as exc:
                    problems.append(FieldProblem(name, str(exc)))
        if problems:
            raise InvalidInput.from_problems(problems, what="search")
        query = sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
        for name, digest in digests:
            query = query.where(records.c.id.in_(
                sa.select(blind_index.c.record_id).where(
                    blind_index.c.digest == digest, blind_index.c.collection == spec.name,
                    blind_index.c.field == name)))
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(records.c.id).limit(limit)).all()
            return [self._open(row, spec, purpose) for row in rows]

    def export(self, collection: str, purpose: str | None,
               batch_size: int = 500) -> Iterator[Record]:
        """Every record of a collection, in id order, in batches of short read transactions."""
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        after = ""
        while True:
            with self.db.read() as conn:
                rows = conn.execute(
                    sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
                    .where(records.c.collection == spec.name, records.c.id > after)
                    .order_by(records.c.id).limit(batch_size)
                ).all()
                batch = [self._open(row, spec, purpose) for row in rows]
            yield from batch
            if len(rows) < batch_size:
                return
            after = rows[-1].id

    # -- internals -----------------------------------------------------------------------------
    def _record_row(self, conn: Connection, spec: CollectionSpec, record_id: str) -> Any:
        row = conn.execute(
            sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
            .where(records.c.id == record_id, records.c.collection == spec.name)
        ).first() if is_id(record_id) else None
        if row is None:
            raise NotFound(f"record {record_id} not found in collection {spec.name!r}",
                           code="record_not_found")
        return row

    def _open(self, row: Any, spec: CollectionSpec, purpose: str) -> Record:
        """Decrypt a joined record row (``_RECORD_COLUMNS``) for ``purpose``."""
        clear: dict[str, Any] = json.loads(row.clear)
        sealed: dict[str, str] = json.loads(row.sealed)
        allowed = {n for n, f in spec.fields.items() if purpose in f.purposes}
        data = {k: v for k, v in clear.items() if k in allowed}
        if sealed.keys() & allowed:
            cipher = self.keys.open_row(row.subject_id, row.dek_version, row.kek_version,
                                        row.wrapped_dek)
            data.update(self.codec.open(spec, row.id, cipher, sealed, allowed))
        present = clear.keys() | sealed.keys()
        ordered = {n: data[n] for n in spec.fields if n in data}
        return Record(row.id, row.subject_id, spec.name, ordered, row.created_at,
                      row.updated_at, self._withheld(spec, purpose, present))

    @staticmethod
    def _withheld(spec: CollectionSpec, purpose: str, present: Any) -> list[FieldProblem]:
        return [FieldProblem(n, "purpose_not_allowed") for n in spec.fields
                if n in present and purpose not in spec.fields[n].purposes]
