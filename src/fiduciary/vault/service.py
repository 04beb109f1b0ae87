"""The record service: create, read, update, delete, list and search customer records, with
data minimisation on the way in and per-field encryption at rest."""

from __future__ import annotations

import dataclasses
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from fiduciary.access.masking import Masker
from fiduciary.access.policy import FieldDecision, PolicyEngine, RelatedRecords, denial_reason
from fiduciary.audit.events import AuditLog
from fiduciary.clock import Clock
from fiduciary.crypto.blind_index import BlindIndexer
from fiduciary.crypto.keyring import Keyring
from fiduciary.datamap import CollectionSpec, DataMap
from fiduciary.datamap.values import ValueRejected, validate
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    RateLimited,
    Reason,
)
from fiduciary.ids import is_id, new_id, ordered_id, shown
from fiduciary.principal import Permission, Principal, Scope, require_permission, require_training
from fiduciary.storage import Database
from fiduciary.vault import store
from fiduciary.vault.gates import RecordGate
from fiduciary.vault.keys import SubjectKeys
from fiduciary.vault.records import Record, RecordCodec, _dumps
from fiduciary.vault.store import Subject, SubjectStatus

#: Called when a break-glass grant let a principal act on a subject (recorded for review).
BreakGlassLog = Callable[[Principal, str, str, "str | None", str], None]

MAX_SEARCH_LIMIT = 1000

#: Disclosing a subject's data to the subject fulfils a legal obligation (GDPR Art. 15).
DISCLOSURE_PURPOSE = "legal_obligation"


class _SubjectRecords:
    """:class:`RelatedRecords` in one transaction, each subject's collection read once."""

    __slots__ = ("_cache", "_conn")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def records(self, subject_id: str, collection: str) -> list[dict[str, Any]]:
        key = (subject_id, collection)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = store.clear_records_of(self._conn, subject_id,
                                                              collection)
        return found


class _Parsed:
    """A record row's JSON parsed once (clear part, sealed part, subject attributes), with the
    read decisions a caller already made for it."""

    __slots__ = ("clear", "decisions", "sealed", "subject")

    def __init__(self, row: Any) -> None:
        self.clear: dict[str, Any] = json.loads(row.clear)
        self.sealed: dict[str, str] = json.loads(row.sealed)
        self.subject: dict[str, Any] = json.loads(row.subject_attributes)
        self.decisions: dict[str, FieldDecision] | None = None


class _Unrelated(NotFound):
    """A record or subject outside the caller's relationships: answered exactly like one that
    does not exist, and audited as a refusal."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code)
        self.reason = Reason.RELATIONSHIP_REQUIRED

    @classmethod
    def record(cls, collection: str, record_id: str) -> _Unrelated:
        return cls(f"record {shown(record_id)} not found in collection {collection!r}",
                   "record_not_found")

    @classmethod
    def subject(cls, subject_id: str) -> _Unrelated:
        return cls(f"subject {shown(subject_id)} not found", "subject_not_found")


@contextmanager
def _hidden_unless_related(spec: CollectionSpec, record_id: str) -> Iterator[None]:
    """A change refused only by a condition (a relationship) answers 404: the record is not
    the caller's to know about."""
    try:
        yield
    except Forbidden as exc:
        if exc.reason == "condition_failed" or any(
                f.reason == "condition_failed" for f in exc.fields):
            raise _Unrelated.record(spec.name, record_id) from None
        raise


class VaultService:
    """Constructed with its storage, data map, keyring and clock (see ``fiduciary.runtime``)."""

    def __init__(self, db: Database, datamap: DataMap, keyring: Keyring, clock: Clock,
                 policy: PolicyEngine, audit: AuditLog, keys: SubjectKeys, *,
                 gate: RecordGate, break_glass_log: BreakGlassLog | None = None) -> None:
        self.db = db
        #: Restriction and legal holds (fiduciary.privacy.gates). Required: a vault that
        #: forgot to ask would serve restricted data and change held evidence.
        self.gate = gate
        self.audit = audit
        self.datamap = datamap
        self.clock = clock
        self.policy = policy
        self.keys = keys
        self.codec = RecordCodec(BlindIndexer(keyring.index_key()),
                                 keyring.derive_key("record-rows"))
        self.masker = Masker(keyring.derive_key("pseudonym-tokens"))
        self._query_key = keyring.derive_key("query-digests")
        self._break_glass_log = break_glass_log

    # -- subjects ------------------------------------------------------------------------------
    def create_subject(self, principal: Principal) -> Subject:
        with self._denials(principal, "subject.create"):
            self._require_any(principal, ("write", "import"))
        with self.db.write() as conn:
            subject = self._insert_subject(conn)
            self.audit.append(conn, self.audit.event(principal, "subject.create",
                                                     subject_ids=[subject.id]))
            return subject

    def _require_any(self, principal: Principal, actions: Iterable[str]) -> None:
        """Subject-level calls need at least one data grant of these actions."""
        if not self.policy.has_any_grant(principal, actions):
            raise Forbidden("this role has no access to customer data",
                            reason=Reason.FIELD_NOT_PERMITTED)

    def _insert_subject(self, conn: Connection) -> Subject:
        subject = Subject(id=new_id(), status=SubjectStatus.ACTIVE, created_at=self.clock.now())
        # The key is stored first: a subject never exists without its key.
        self.keys.create(subject.id)
        store.insert_subject(conn, subject)
        return subject

    def get_subject(self, principal: Principal, subject_id: str) -> Subject:
        """The subject, for whoever may read one of its records (its relationships): to
        anyone else it does not exist. Audited, like every read of a customer."""
        with self._denials(principal, "subject.read",
                           subject_ids=[subject_id] if is_id(subject_id) else []):
            self._require_any(principal, ("read", "search", "write"))
            with self.db.read() as conn:
                subject = store.subject(conn, subject_id)
                self._require_reach(conn, principal, subject_id)
        self.audit.append_committed(self.audit.event(principal, "subject.read",
                                                     subject_ids=[subject_id]))
        return subject

    def _require_reach(self, conn: Connection, principal: Principal, subject_id: str) -> None:
        """404 unless the subject is within the principal's reach: the operator, the privacy
        office, a role some read grant of which holds for everyone, or a readable record."""
        if not (principal.is_system or principal.can(Permission.PRIVACY_MANAGE)
                or self.policy.reaches_everyone(principal)
                or self._reaches(conn, principal, subject_id)):
            raise _Unrelated.subject(subject_id)

    def _reaches(self, conn: Connection, principal: Principal, subject_id: str) -> bool:
        """Whether any of the subject's records is readable by the principal for a purpose
        its grants name (break-glass included)."""
        related = _SubjectRecords(conn)
        attributes = json.loads(store.subject_attributes(conn, subject_id))
        for row in store.record_rows_of(conn, subject_id):
            spec = self.datamap.collections.get(row.collection)
            if spec is None:
                continue
            clear = json.loads(row.clear)
            present = self._present(spec, clear, json.loads(row.sealed))
            for purpose in self.policy.purposes_for(principal, spec.name, "read"):
                decisions = self.policy.decide(principal, "read", spec, purpose, present,
                                               clear, attributes, subject_id, related=related)
                if any(d.masking is not None for d in decisions.values()):
                    return True
        return False

    def disclose_subject(self, principal: Principal, subject_id: str,
                         request_id: str | None = None) -> list[Record]:
        """Every record of the subject, every field in clear, for the subject themself (GDPR
        Art. 15 and 20, CCPA right to know). Only for whoever fulfils their requests."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        require_training(principal)
        with self.db.read() as conn:
            store.subject(conn, subject_id)
            rows = store.record_rows_of(conn, subject_id)
        out = []
        for row in rows:
            clear: dict[str, Any] = json.loads(row.clear)
            sealed: dict[str, str] = json.loads(row.sealed)
            spec = self.datamap.collections.get(row.collection)
            data = dict(clear)
            if sealed and spec is not None:
                cipher = self.keys.cipher_for(subject_id)
                data.update(self.codec.open(spec, row.id, cipher, sealed, set(sealed),
                                            row.version))
            out.append(Record(row.id, subject_id, row.collection, data, row.created_at,
                              row.updated_at))
        self.audit.append_committed(self.audit.event(
            principal, "subject.disclose", purpose=DISCLOSURE_PURPOSE,
            subject_ids=[subject_id], record_ids=[r.id for r in out],
            fields={f for r in out for f in r.data},
            details={"result_count": len(out), "request_id": request_id}))
        return out

    # -- checks --------------------------------------------------------------------------------
    def collection(self, name: str) -> CollectionSpec:
        spec = self.datamap.collections.get(name)
        if spec is None:
            # The message never repeats the submitted name (README: no error echoes input).
            raise NotFound("collection not declared in the data map",
                           code="collection_not_found")
        return spec

    def check_purpose(self, spec: CollectionSpec | None, purpose: str | None) -> str:
        """The purpose must be declared; for a collection, declared for one of its fields."""
        if not purpose:
            raise InvalidInput("a purpose is required for every data call",
                               [FieldProblem("purpose", "required")])
        if purpose not in self.datamap.purposes:
            raise InvalidInput(
                "purpose not declared in the data map",
                [FieldProblem("purpose",
                              f"unknown purpose (declared: {', '.join(self.datamap.purposes)})")],
            )
        if spec is not None and not any(purpose in f.purposes for f in spec.fields.values()):
            raise Forbidden(f"collection {spec.name!r} is not used for purpose {purpose!r}",
                            reason=Reason.PURPOSE_NOT_ALLOWED)
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
    @contextmanager
    def _denials(self, principal: Principal, action: str, *, collection: str | None = None,
                 purpose: str | None = None, record_ids: Iterable[str] = (),
                 subject_ids: Iterable[str] = (), fields: Iterable[str] = ()) -> Iterator[None]:
        """Every refusal and integrity failure leaves its own committed event."""
        try:
            yield
        except (Forbidden, _Unrelated, RateLimited) as exc:
            self.audit.append_committed(self.audit.event(
                principal, action, collection=collection, purpose=purpose,
                record_ids=record_ids, subject_ids=subject_ids,
                fields=[f.field for f in exc.fields] or list(fields),
                decision="deny", reason=exc.reason))
            raise
        except IntegrityFailure as exc:
            self.audit.append_committed(self.audit.event(
                principal, "integrity.failure", collection=collection, purpose=purpose,
                record_ids=record_ids, subject_ids=subject_ids,
                fields=[f.field for f in exc.fields], decision="deny",
                reason=Reason.INTEGRITY_ERROR, details={"during": action}))
            raise

    def create_record(self, principal: Principal, collection: str, subject_id: Any, data: Any,
                      purpose: str | None) -> Record:
        with self._denials(principal, "record.create", collection=collection, purpose=purpose,
                           subject_ids=[subject_id] if is_id(subject_id) else [],
                           fields=list(data) if isinstance(data, Mapping) else []):
            return self._create_record(principal, collection, subject_id, data, purpose)

    def _create_record(self, principal: Principal, collection: str, subject_id: Any,
                       data: Any, purpose: str | None) -> Record:
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
        record_id = ordered_id()  # time-ordered, as the importer's (README)
        with self.db.write() as conn:
            # FOR SHARE: an erasure of this subject waits for this write, or this write sees
            # the erasure (PostgreSQL; SQLite write transactions are serial anyway).
            row = store.subject_for_write(conn, subject_id)
            if row is None or row.status in (SubjectStatus.ERASED,
                                             SubjectStatus.ERASURE_PENDING):
                reason = ("unknown subject" if row is None
                          else "subject has been erased or is being erased")
                raise InvalidInput.from_problems([FieldProblem("subject_id", reason)], "write")
            self.gate.check_process(principal, subject_id, row.status, purpose)
            clear_values = {k: v for k, v in values.items() if not spec.fields[k].encrypted}
            related = _SubjectRecords(conn)
            self._require_write(principal, spec, purpose, values, clear_values,
                                json.loads(row.attributes), subject_id, related)
            cipher = self.keys.cipher_for(subject_id)
            clear, sealed = self.codec.seal(spec, record_id, cipher, values, 1)
            stored = {
                "id": record_id, "subject_id": subject_id, "collection": spec.name,
                "clear": _dumps(clear), "sealed": _dumps(sealed),
                "created_at": now, "updated_at": now, "version": 1,
            }
            store.insert_record(conn, stored,
                                self.codec.index_rows(spec, record_id, subject_id, values))
            self._update_subject_attributes(conn, spec, subject_id, values, set())
            self.audit.append(conn, self.audit.event(
                principal, "record.create", collection=spec.name, record_ids=[record_id],
                subject_ids=[subject_id], fields=list(values), purpose=purpose,
                details={"row_digests": {record_id: self.codec.row_entry(stored)}}))
            return self._written(self._record_row(conn, spec, record_id), spec, purpose,
                                 principal, _SubjectRecords(conn))

    def get_record(self, principal: Principal, collection: str, record_id: str,
                   purpose: str | None) -> Record:
        with self._denials(principal, "record.read", collection=collection, purpose=purpose,
                           record_ids=[record_id] if is_id(record_id) else []):
            spec = self.collection(collection)
            purpose = self.check_purpose(spec, purpose)
            with self.db.read() as conn:
                row = self._record_row(conn, spec, record_id)
                record = self._open(row, spec, purpose, principal, _SubjectRecords(conn))
            self._audit_read(principal, "record.read", spec.name, purpose, [record])
            return record

    def verify(self, principal: Principal, collection: str, record_id: str, claimed: Any,
               purpose: str | None) -> bool:
        """Whether every ``field: value`` the caller was told matches the record, for roles
        granted ``verify`` on those fields: an agent checks a caller's date of birth without
        seeing it. A few attempts per record and per day, each audited; refused ones too."""
        fields = list(claimed) if isinstance(claimed, Mapping) else []
        with self._denials(principal, "record.verify", collection=collection, purpose=purpose,
                           record_ids=[record_id] if is_id(record_id) else [], fields=fields):
            match = self._verify(principal, collection, record_id, claimed, purpose)
        self.audit.append_committed(self.audit.event(
            principal, "record.verify", collection=collection, purpose=purpose,
            record_ids=[record_id], subject_ids=[match[1]], fields=fields,
            details={"match": match[0], "query_digests": self.query_digests(claimed)}))
        return match[0]

    def _verify(self, principal: Principal, collection: str, record_id: str, claimed: Any,
                purpose: str | None) -> tuple[bool, str]:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        if not isinstance(claimed, Mapping) or not claimed:
            raise InvalidInput("name at least one field: value to verify",
                               [FieldProblem("body", "expected a non-empty object")])
        problems: list[FieldProblem] = []
        wanted: dict[str, Any] = {}
        for name, value in claimed.items():
            f = spec.fields.get(name)
            if f is None:
                problems.append(FieldProblem(name, "not declared in the data map"))
                continue
            try:
                wanted[name] = validate(f, value)
            except ValueRejected as exc:
                problems.append(FieldProblem(name, str(exc)))
        if problems:
            raise InvalidInput.from_problems(problems, what="verification")
        settings = self.policy.pack.settings
        self._reserve(principal, "record.verify.attempt", collection, record_id,
                      ((settings.verify_per_day, timedelta(days=1)),), "verifications",
                      per_record=settings.verify_per_record_per_day)
        with self.db.read() as conn:
            row = self._record_row(conn, spec, record_id)
            self.gate.check_process(principal, row.subject_id, row.subject_status, purpose)
            clear: dict[str, Any] = json.loads(row.clear)
            decisions = self.policy.decide(principal, "verify", spec, purpose, list(wanted),
                                           clear, json.loads(row.subject_attributes),
                                           row.subject_id, related=_SubjectRecords(conn))
            with _hidden_unless_related(spec, record_id):
                self._require_all(decisions, "verify")
        sealed: dict[str, str] = json.loads(row.sealed)
        stored = {k: v for k, v in clear.items() if k in wanted}
        if sealed.keys() & wanted.keys():
            stored.update(self.codec.open(spec, row.id, self.keys.cipher_for(row.subject_id),
                                          sealed, set(wanted), row.version))
        same = all(hmac.compare_digest(_dumps({"v": stored.get(k)}).encode(),
                                       _dumps({"v": v}).encode()) for k, v in wanted.items())
        return same, str(row.subject_id)

    def _audit_read(self, principal: Principal, action: str, collection: str | None,
                    purpose: str, found: list[Record], **details: Any) -> None:
        """Committed before the caller gets any data: no event, no data. Fields no record
        showed in clear are named (``masked_fields``): a breach's scope tells what was
        decrypted from what was only seen masked."""
        fields = {f for r in found for f in r.data}
        masked = fields - {f for r in found for f in r.data if f not in r.masked}
        if masked:
            details = {**details, "masked_fields": sorted(masked)}
        self.audit.append_committed(self.audit.event(
            principal, action, collection=collection, purpose=purpose,
            record_ids=[r.id for r in found], subject_ids=[r.subject_id for r in found],
            fields=fields,
            decision="allow" if all(not r.withheld for r in found) else "partial",
            details={"result_count": len(found), **details}))

    def update_record(self, principal: Principal, collection: str, record_id: str, data: Any,
                      purpose: str | None) -> Record:
        with self._denials(principal, "record.update", collection=collection, purpose=purpose,
                           record_ids=[record_id] if is_id(record_id) else [],
                           fields=list(data) if isinstance(data, Mapping) else []):
            return self._update_record(principal, collection, record_id, data, purpose)

    def _update_record(self, principal: Principal, collection: str, record_id: str,
                       data: Any, purpose: str | None) -> Record:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        values, removed = self.validate_write(spec, data, purpose, partial=True)
        with self.db.write() as conn:
            row = self._record_row(conn, spec, record_id, lock=True)
            self.gate.check_process(principal, row.subject_id, row.subject_status, purpose)
            self.gate.check_change(conn, row.subject_id, record_id, spec.name, "changed")
            clear: dict[str, Any] = json.loads(row.clear)
            # Conditions are tested on the record as stored — nobody edits a record they could
            # not act on by rewriting the very field a condition reads — and as it would be
            # (nobody hands a record to someone else, or signs a note with another's name).
            related = _SubjectRecords(conn)
            attributes = json.loads(row.subject_attributes)
            changing = {**values, **dict.fromkeys(removed)}
            after = {k: v for k, v in {**clear, **changing}.items() if v is not None}
            with _hidden_unless_related(spec, record_id):
                self._require_write(principal, spec, purpose, changing, clear, attributes,
                                    row.subject_id, related)
            self._require_write(principal, spec, purpose, changing, after, attributes,
                                row.subject_id, related)
            cipher = self.keys.cipher_for(row.subject_id)
            # Every field of the row binds its write version: the unchanged ones are sealed
            # again for this write (a tampered one fails here, 409, instead of being kept).
            version = row.version + 1
            sealed = self.codec.reseal(spec, record_id, cipher, json.loads(row.sealed),
                                       row.version, version, skip=removed | set(values))
            new_clear, new_sealed = self.codec.seal(spec, record_id, cipher, values, version)
            for name in removed | set(values):
                clear.pop(name, None)
                sealed.pop(name, None)
            clear.update(new_clear)
            sealed.update(new_sealed)
            now = self.clock.now()
            touched = [n for n in removed | set(values) if spec.fields[n].searchable]
            stored = {"id": record_id, "subject_id": row.subject_id, "collection": spec.name,
                      "clear": _dumps(clear), "sealed": _dumps(sealed),
                      "created_at": row.created_at, "updated_at": now, "version": version}
            store.update_record(conn, record_id, stored["clear"], stored["sealed"], now, touched,
                                self.codec.index_rows(spec, record_id, row.subject_id, values)
                                if touched else [], version)
            self._update_subject_attributes(conn, spec, row.subject_id, values, removed)
            self.audit.append(conn, self.audit.event(
                principal, "record.update", collection=spec.name, record_ids=[record_id],
                subject_ids=[row.subject_id], fields=[*values, *removed], purpose=purpose,
                details={"row_digests": {record_id: self.codec.row_entry(stored)}}))
            updated = self._record_row(conn, spec, record_id)
            return self._written(updated, spec, purpose, principal, _SubjectRecords(conn))

    def delete_record(self, principal: Principal, collection: str, record_id: str,
                      purpose: str | None) -> None:
        with self._denials(principal, "record.delete", collection=collection, purpose=purpose,
                           record_ids=[record_id] if is_id(record_id) else []):
            self._delete_record(principal, collection, record_id, purpose)

    def _delete_record(self, principal: Principal, collection: str, record_id: str,
                       purpose: str | None) -> None:
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        with self.db.write() as conn:
            row = self._record_row(conn, spec, record_id, lock=True)
            self.gate.check_process(principal, row.subject_id, row.subject_status, purpose)
            self.gate.check_change(conn, row.subject_id, record_id, spec.name, "deleted")
            clear = json.loads(row.clear)
            present = self._present(spec, clear, json.loads(row.sealed))
            decisions = self.policy.decide(principal, "delete", spec, purpose, present, clear,
                                           json.loads(row.subject_attributes), row.subject_id,
                                           related=_SubjectRecords(conn))
            with _hidden_unless_related(spec, record_id):
                self._require_all(decisions, "delete")
            store.delete_records(conn, [record_id])
            self.audit.append(conn, self.audit.event(
                principal, "record.delete", collection=spec.name, record_ids=[record_id],
                subject_ids=[row.subject_id], fields=present, purpose=purpose))

    def list_subject_records(self, principal: Principal, subject_id: str,
                             purpose: str | None) -> list[Record]:
        with self._denials(principal, "subject.records", purpose=purpose,
                           subject_ids=[subject_id] if is_id(subject_id) else []):
            found = self._list_subject_records(principal, subject_id, purpose)
        self._audit_read(principal, "subject.records", None, str(purpose), found)
        return found

    def _list_subject_records(self, principal: Principal, subject_id: str,
                              purpose: str | None) -> list[Record]:
        purpose = self.check_purpose(None, purpose)
        self._require_any(principal, ("read",))
        with self.db.read() as conn:
            subject = store.subject(conn, subject_id)
            self.gate.check_process(principal, subject_id, subject.status, purpose)
            rows = store.record_rows_of(conn, subject_id)
            related = _SubjectRecords(conn)
            out = []
            for row in rows:
                spec = self.datamap.collections.get(row.collection)
                if spec is None or not any(purpose in f.purposes for f in spec.fields.values()):
                    continue
                record = self._view(row, spec, purpose, principal, "read", required=False,
                                    related=related)
                if record is not None:
                    out.append(record)
            if not out:
                # Outside the caller's relationships, the customer does not exist either.
                self._require_reach(conn, principal, subject_id)
            return out

    def search(self, principal: Principal, collection: str, where: Any, purpose: str | None,
               limit: int = 100) -> list[Record]:
        queried = list(where) if isinstance(where, Mapping) else []
        with self._denials(principal, "record.search", collection=collection, purpose=purpose,
                           fields=queried):
            found = self._search(principal, collection, where, purpose, limit)
        self._audit_read(principal, "record.search", collection, str(purpose), found,
                         fields_queried=sorted(queried), query_digests=self.query_digests(where))
        return found

    def query_digests(self, where: Any) -> dict[str, str]:
        """A short keyed digest of each value searched or verified, the same in any field:
        monitoring sees one value tried across fields, or many values of one field, without
        the values (and without a digest comparable with the blind index)."""
        if not isinstance(where, Mapping):
            return {}
        return {str(k): hmac.new(self._query_key, json.dumps(v, sort_keys=True, default=str)
                                 .encode(), "sha256").hexdigest()[:16]
                for k, v in where.items()}

    def _search(self, principal: Principal, collection: str, where: Any, purpose: str | None,
                limit: int) -> list[Record]:
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
        # May this principal query by these fields at all (conditions come per record)?
        queried_fields = list(where)
        self._require_all(self.policy.precheck(principal, "search", spec, purpose,
                                               queried_fields), "search by")
        # A search by a value is a read of that value: only a role that sees it in clear may
        # search by it, or a masked field could be recovered by guessing.
        self._require_clear(self.policy.precheck(principal, "read", spec, purpose,
                                                 queried_fields))
        self._limit_searches(principal, spec.name)
        found: list[Record] = []
        with self.db.read() as conn:
            rows = store.search_rows(conn, spec.name, digests, limit)
            self._prefetch_keys(rows)
            related = _SubjectRecords(conn)
            for row in rows:
                parsed = _Parsed(row)
                clear, subject = parsed.clear, parsed.subject
                queried = self.policy.decide(principal, "search", spec, purpose, queried_fields,
                                             clear, subject, row.subject_id, related=related)
                if any(d.masking is None for d in queried.values()):
                    continue  # not findable by these fields
                # One read decision for the fields shown and the fields queried: a field's
                # decision does not depend on which others are decided with it.
                present = self._present(spec, clear, parsed.sealed)
                parsed.decisions = self.policy.decide(
                    principal, "read", spec, purpose, [*present, *(
                        n for n in queried_fields if n not in present)],
                    clear, subject, row.subject_id, related=related)
                if any(parsed.decisions[n].masking != "clear" for n in queried_fields):
                    continue  # not seen in clear (a VIP)
                record = self._view(row, spec, purpose, principal, "read", required=False,
                                    related=related, parsed=parsed)
                if record is not None:
                    found.append(record)
        return found

    def export(self, principal: Principal, collection: str, purpose: str | None,
               batch_size: int = 500) -> Iterator[Record]:
        """Every permitted record of a collection, in id order, in short read transactions."""
        spec = self.collection(collection)
        purpose = self.check_purpose(spec, purpose)
        with self._denials(principal, "records.export", collection=collection,
                           purpose=purpose):
            self._require_some(self.policy.precheck(principal, "export", spec, purpose,
                                                    list(spec.fields)), "export")
        # Pseudonymised data must not join back to people: each export names subjects by a
        # pseudonym of its own (stable within the export, unlinkable across exports).
        salt = secrets.token_bytes(32) if self.datamap.purposes[purpose].pseudonymised_only \
            else None
        after = ""
        while True:
            with self.db.read() as conn:
                rows = store.collection_rows(conn, spec.name, after, batch_size)
                self._prefetch_keys(rows)
                related = _SubjectRecords(conn)
                batch = [r for r in (self._view(row, spec, purpose, principal, "export",
                                                required=False, related=related)
                                     for row in rows) if r]
            self._audit_read(principal, "records.export", spec.name, purpose, batch)
            if salt is not None:
                batch = [dataclasses.replace(r, subject_id="psn_" + hmac.new(
                    salt, r.subject_id.encode(), "sha256").hexdigest()[:24]) for r in batch]
            yield from batch
            if len(rows) < batch_size:
                return
            after = rows[-1].id

    # -- decisions -----------------------------------------------------------------------------
    def _require_write(self, principal: Principal, spec: CollectionSpec, purpose: str,
                       values: Mapping[str, Any], record: Mapping[str, Any],
                       subject: Mapping[str, Any], subject_id: str,
                       related: RelatedRecords) -> None:
        decisions = self.policy.decide(principal, "write", spec, purpose, list(values), record,
                                       subject, subject_id, related=related)
        self._require_all(decisions, "write")

    def _limit_searches(self, principal: Principal, collection: str) -> None:
        """Staff search within the pack's sliding windows. Each attempt is reserved on the
        trail (``record.search.attempt``) in the transaction that counts, so the limit holds
        for parallel requests and across API nodes."""
        if not principal.is_person:
            return
        settings = self.policy.pack.settings
        self._reserve(principal, "record.search.attempt", collection, None,
                      ((settings.search_per_minute, timedelta(minutes=1)),
                       (settings.search_per_day, timedelta(days=1))), "searches")

    def _reserve(self, principal: Principal, action: str, collection: str,
                 record_id: str | None, windows: Iterable[tuple[int, timedelta]],
                 what: str, per_record: int = 0) -> None:
        now = self.clock.now()
        limits: list[tuple[int, datetime, str | None]] = [
            (limit, now - window, None) for limit, window in windows]
        if record_id is not None:
            limits.append((per_record, now - timedelta(days=1), record_id))
        exceeded = self.audit.reserve(self.audit.event(
            principal, action, collection=collection,
            record_ids=[record_id] if record_id else []), limits)
        if exceeded is not None:
            limit, since = exceeded
            window = now - since
            raise RateLimited(f"at most {limit} {what} per "
                              f"{'day' if window >= timedelta(days=1) else 'minute'}"
                              + (" of one record" if since and record_id and limit == per_record
                                 else "") + ": try again later",
                              retry_after=window.total_seconds())

    @staticmethod
    def _require_clear(decisions: Mapping[str, FieldDecision]) -> None:
        masked = sorted(n for n, d in decisions.items() if d.masking != "clear")
        if masked:
            raise Forbidden(
                f"searching by {', '.join(masked)} is not permitted: this role does not see "
                "it in clear for this purpose", reason=Reason.SEARCH_NOT_PERMITTED,
                fields=[FieldProblem(n, Reason.SEARCH_NOT_PERMITTED) for n in masked])

    @staticmethod
    def _require_all(decisions: Mapping[str, FieldDecision], action: str) -> None:
        denied = {n: d for n, d in decisions.items() if d.masking is None}
        if denied:
            reason = denial_reason(denied)
            raise Forbidden(
                f"not permitted to {action} field(s) {', '.join(sorted(denied))} ({reason})",
                reason=reason,
                fields=[FieldProblem(n, str(d.reason)) for n, d in sorted(denied.items())])

    @staticmethod
    def _require_some(decisions: Mapping[str, FieldDecision], action: str) -> None:
        if decisions and all(d.masking is None for d in decisions.values()):
            reason = denial_reason(decisions)
            raise Forbidden(f"not permitted to {action} any field ({reason})", reason=reason)

    def _update_subject_attributes(self, conn: Connection, spec: CollectionSpec,
                                   subject_id: str, values: Mapping[str, Any],
                                   removed: set[str]) -> None:
        names = [n for n in spec.subject_attributes if n in values or n in removed]
        if not names:
            return
        current = json.loads(store.subject_attributes(conn, subject_id))
        for n in names:
            if n in values:
                current[n] = values[n]
            else:
                current.pop(n, None)
        store.set_subject_attributes(conn, subject_id, _dumps(current))

    # -- internals -----------------------------------------------------------------------------
    def _prefetch_keys(self, rows: Iterable[Any]) -> None:
        """One key-store query for a batch of rows, instead of one per subject."""
        ids = {r.subject_id for r in rows if r.sealed != "{}"}
        if len(ids) > 1:
            self.keys.ciphers(ids)

    def _record_row(self, conn: Connection, spec: CollectionSpec, record_id: str,
                    lock: bool = False) -> Any:
        row = store.record_row(conn, spec.name, record_id, lock=lock)
        if row is None:
            raise NotFound(f"record {shown(record_id)} not found in collection {spec.name!r}",
                           code="record_not_found")
        return row

    @staticmethod
    def _present(spec: CollectionSpec, clear: Mapping[str, Any],
                 sealed: Mapping[str, Any]) -> list[str]:
        return [n for n in spec.fields if n in clear or n in sealed]

    def _open(self, row: Any, spec: CollectionSpec, purpose: str,
              principal: Principal, related: RelatedRecords) -> Record:
        """A record the caller asked for by id: nothing permitted is a 403 (a 404 when only
        a condition — a relationship — kept it from the caller)."""
        record = self._view(row, spec, purpose, principal, "read", required=True,
                            related=related)
        assert record is not None  # required=True raises instead
        return record

    def _written(self, row: Any, spec: CollectionSpec, purpose: str,
                 principal: Principal, related: RelatedRecords) -> Record:
        """The answer to a permitted write: what the writer may read of it, perhaps nothing
        (a write-only key) — never a 403 that would undo the write."""
        record = self._view(row, spec, purpose, principal, "read", required=False,
                            related=related)
        if record is not None:
            return record
        clear, sealed = json.loads(row.clear), json.loads(row.sealed)
        decisions = self.policy.decide(principal, "read", spec, purpose,
                                       self._present(spec, clear, sealed), clear,
                                       json.loads(row.subject_attributes), row.subject_id,
                                       related=related)
        return Record(row.id, row.subject_id, spec.name, {}, row.created_at, row.updated_at,
                      [FieldProblem(n, str(d.reason)) for n, d in decisions.items()])

    def _view(self, row: Any, spec: CollectionSpec, purpose: str, principal: Principal,
              action: str, required: bool, related: RelatedRecords,
              parsed: _Parsed | None = None) -> Record | None:
        """Decide, decrypt only what is permitted, mask as decided. With ``required``, a record
        of which nothing is permitted is a 403; otherwise it is skipped (``None``).
        ``parsed``: the row already parsed (and decided, for ``action``) by the caller."""
        if not self.gate.may_process(principal, row.subject_status, purpose):
            if required:
                self.gate.check_process(principal, row.subject_id, row.subject_status, purpose)
            return None
        if parsed is None:
            parsed = _Parsed(row)
        clear, sealed = parsed.clear, parsed.sealed
        present = self._present(spec, clear, sealed)
        decisions = parsed.decisions
        if decisions is None:
            decisions = self.policy.decide(principal, action, spec, purpose, present, clear,
                                           parsed.subject, row.subject_id, related=related)
        else:
            decisions = {n: decisions[n] for n in present}
        allowed = {n for n, d in decisions.items() if d.masking is not None}
        if not allowed and present:
            if not required:
                return None
            if any(d.reason == "condition_failed" for d in decisions.values()):
                # Outside the caller's relationships: as if it did not exist, whatever else
                # the fields' reasons would have told.
                raise _Unrelated.record(spec.name, row.id)
            reason = denial_reason(decisions)
            raise Forbidden(f"nothing of record {row.id} is permitted ({reason})", reason=reason)
        plain = {k: v for k, v in clear.items() if k in allowed}
        if sealed.keys() & allowed:
            cipher = self.keys.cipher_for(row.subject_id)
            plain.update(self.codec.open(spec, row.id, cipher, sealed, allowed, row.version))
        data = {}
        for n in present:
            if n in allowed:
                d = decisions[n]
                data[n] = (plain[n] if d.masking == "clear" else self.masker.mask(
                    str(d.masking), d.partial, spec.name, n, plain[n], plain))
        withheld = [FieldProblem(n, str(decisions[n].reason)) for n in present
                    if n not in allowed]
        if self._break_glass_log and principal.break_glass_covers(row.subject_id):
            self._break_glass_log(principal, row.subject_id, spec.name, row.id, action)
        return Record(row.id, row.subject_id, spec.name, data, row.created_at,
                      row.updated_at, withheld,
                      [n for n in data if decisions[n].masking != "clear"])
