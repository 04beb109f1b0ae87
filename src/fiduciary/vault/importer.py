"""Bulk import of CSV or JSON-lines files: good rows are committed in batches, every bad row is
reported with its line number and reasons (never its values), and no row is half-written."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from fiduciary.access.policy import FieldDecision
from fiduciary.datamap import CollectionSpec
from fiduciary.datamap.values import ValueRejected, from_text
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.ids import is_id, new_id, ordered_id
from fiduciary.principal import Principal
from fiduciary.storage.bulk import Batch
from fiduciary.storage.schema import blind_index, records, subjects
from fiduciary.vault import store
from fiduciary.vault.records import _dumps
from fiduciary.vault.service import VaultService
from fiduciary.vault.store import SubjectStatus

log = logging.getLogger("fiduciary.import")

_DENIALS = frozenset({"field_not_permitted", "purpose_not_allowed", "condition_failed",
                      "training_expired", "consent_required"})

#: A parsed row: (line number, field values, problems found while parsing).
ParsedRow = tuple[int, dict[str, Any], list[FieldProblem]]


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    rejected: int = 0
    subjects_created: int = 0
    created_subject_ids: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "imported": self.imported, "rejected": self.rejected,
                "subjects_created": self.subjects_created}


def read_rows(path: Path, spec: CollectionSpec, fh: TextIO) -> Iterator[ParsedRow]:
    """CSV (by ``.csv``) or JSON lines (anything else), one parsed row at a time."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(spec, fh)
    else:
        yield from _jsonl_rows(fh)


def _csv_rows(spec: CollectionSpec, fh: TextIO) -> Iterator[ParsedRow]:
    reader = csv.DictReader(fh)
    for raw in reader:
        line = reader.line_num
        row: dict[str, Any] = {}
        problems: list[FieldProblem] = []
        if None in raw:
            problems.append(FieldProblem("row", "more cells than header columns"))
        for name, text in raw.items():
            if name is None or text is None:
                continue
            f = spec.fields.get(name)
            try:
                value = from_text(f, text) if f else (text or None)
            except ValueRejected as exc:
                problems.append(FieldProblem(name, str(exc)))
                continue
            if value is not None:
                row[name] = value
        yield line, row, problems


def _jsonl_rows(fh: TextIO) -> Iterator[ParsedRow]:
    for line, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            yield line, {}, [FieldProblem("row", "not valid JSON")]
            continue
        if not isinstance(obj, dict):
            yield line, {}, [FieldProblem("row", "expected a JSON object")]
            continue
        yield line, {k: v for k, v in obj.items() if v is not None}, []


class Importer:
    def __init__(self, vault: VaultService, batch_size: int = 1000) -> None:
        self.vault = vault
        self.batch_size = batch_size

    def run(
        self,
        principal: Principal,
        collection: str,
        rows: Iterable[ParsedRow],
        purpose: str,
        reject: Callable[[int, list[FieldProblem]], None],
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        spec = self.vault.collection(collection)
        purpose = self.vault.check_purpose(spec, purpose)
        policy = self.vault.policy
        self.vault._require_some(policy.precheck(principal, "import", spec, purpose,
                                                 list(spec.fields)), "import")
        self._principal = principal
        self._purpose = purpose
        self._collection = spec.name
        self._reusable = not policy.depends_on_record(principal, spec, "import", purpose)
        self._decided: dict[tuple[str, ...], dict[str, FieldDecision]] = {}
        report = ImportReport()
        pending: list[tuple[int, str | None, dict[str, Any]]] = []
        for line, parsed, problems in rows:
            report.read += 1
            if any(p.field == "row" for p in problems):
                self._reject(report, reject, line, problems)
                continue
            subject_id = parsed.pop("subject_id", None)
            if subject_id is not None and not isinstance(subject_id, str):
                problems.append(FieldProblem("subject_id", "expected a string"))
            try:
                values, _ = self.vault.validate_write(spec, parsed, purpose, partial=False)
            except InvalidInput as exc:
                # A cell that failed to parse is already reported; skip its "required" echo.
                named = {p.field for p in problems}
                problems += [p for p in exc.fields if p.field not in named]
            if problems:
                self._reject(report, reject, line, problems)
                continue
            pending.append((line, subject_id, values))
            if len(pending) >= self.batch_size:
                self._flush(spec, pending, report, reject)
                if progress:
                    progress(report.read)
                pending = []
        if pending:
            self._flush(spec, pending, report, reject)
        if progress:
            progress(report.read)
        return report

    def _flush(self, spec: CollectionSpec, pending: list[tuple[int, str | None, dict[str, Any]]],
               report: ImportReport, reject: Callable[[int, list[FieldProblem]], None]) -> None:
        known = self._existing({s for _, s, _ in pending if s and is_id(s)})
        keys = self.vault.keys
        ciphers = keys.ciphers(known)
        attr_names = spec.subject_attributes
        now = self.vault.clock.now()
        prepared: list[tuple[int, Batch]] = []
        #: Field names per record, for the audit event (no parsing of the JSON just built).
        names: dict[str, tuple[str, ...]] = {}
        for line, subject_id, values in pending:
            one = Batch()
            new_attrs = {n: values[n] for n in attr_names if n in values}
            if subject_id is not None and subject_id not in known:
                self._reject(report, reject, line, [FieldProblem(
                    "subject_id", "unknown, restricted or erased subject")])
                continue
            subject_attrs = ({**json.loads(known[subject_id].attributes), **new_attrs}
                             if subject_id else new_attrs)
            denied = self._denied(spec, values, subject_attrs, subject_id)
            if denied:
                self._reject(report, reject, line, denied)
                continue
            if subject_id is None:
                subject_id = new_id()
                key_row, cipher = keys.new_key_row(subject_id, remember=False)
                one.subjects.append({"id": subject_id, "status": SubjectStatus.ACTIVE,
                                     "created_at": now, "attributes": _dumps(new_attrs)})
                one.subject_keys.append(key_row)
            else:
                cipher = ciphers[subject_id]
                if new_attrs:
                    one.subject_attributes[subject_id] = _dumps(subject_attrs)
            # Time-ordered (UUIDv7): each batch appends to the end of the id B-trees instead of
            # touching pages all over them; the id reveals the creation time, which the record
            # shows anyway (created_at).
            record_id = ordered_id()
            names[record_id] = tuple(values)
            clear, sealed = self.vault.codec.seal(spec, record_id, cipher, values, 1)
            one.records.append({"id": record_id, "subject_id": subject_id,
                                "collection": spec.name, "clear": _dumps(clear),
                                "sealed": _dumps(sealed), "created_at": now, "updated_at": now,
                                "version": 1})
            one.index = self.vault.codec.index_rows(spec, record_id, subject_id, values)
            prepared.append((line, one))
        if not prepared:
            return
        whole = Batch()
        for _, one in prepared:
            whole.extend(one)
        # New subjects' keys are stored before the subjects: none exists without its key.
        keys.store.put(whole.subject_keys)
        try:
            with self.vault.db.write() as conn:
                if not self._still_active(conn, whole):
                    raise _SubjectChanged()
                _insert(conn, whole)
                self._audit(conn, spec, whole, names)
            self._count(report, prepared)
            return
        except _SubjectChanged:
            log.warning("a subject of the batch was erased or restricted meanwhile; "
                        "storing row by row")
        except sa.exc.DBAPIError as exc:
            log.warning("batch insert failed (%s); retrying row by row", type(exc).__name__)
        for line, one in prepared:
            try:
                with self.vault.db.write() as conn:
                    if not self._still_active(conn, one):
                        raise _SubjectChanged()
                    _insert(conn, one)
                    self._audit(conn, spec, one, names)
                self._count(report, [(line, one)])
            except _SubjectChanged:
                self._reject(report, reject, line, [FieldProblem(
                    "subject_id", "unknown, restricted or erased subject")])
            except sa.exc.DBAPIError:
                self._reject(report, reject, line, [FieldProblem("row", "could not be stored")])

    @staticmethod
    def _still_active(conn: Any, batch: Batch) -> bool:
        """Existing subjects the batch adds to are still active, locked (FOR SHARE) until it
        commits, so an erasure cannot slip between the check and the insert."""
        new = {s["id"] for s in batch.subjects}
        ids = {r["subject_id"] for r in batch.records} - new
        if not ids:
            return True
        active = conn.execute(sa.select(subjects.c.id).where(
            subjects.c.id.in_(ids), subjects.c.status == SubjectStatus.ACTIVE)
            .with_for_update(read=True)).scalars().all()
        return len(active) == len(ids)

    def _audit(self, conn: Any, spec: CollectionSpec, batch: Batch,
               names: dict[str, tuple[str, ...]]) -> None:
        """The batch and its event commit together. ``names``: each record's field names."""
        audit = self.vault.audit
        audit.append(conn, audit.event(
            self._principal, "records.import", collection=spec.name,
            record_ids=[r["id"] for r in batch.records],
            subject_ids=[r["subject_id"] for r in batch.records],
            fields={f for r in batch.records for f in names[r["id"]]},
            purpose=self._purpose, details={
                "rows": len(batch.records), "subjects_created": len(batch.subjects),
                # Each row's keyed digest as stored (vault.rollback checks rows against it).
                "row_digests": {r["id"]: self.vault.codec.row_entry(r)
                                for r in batch.records}}))

    def _reject(self, report: ImportReport, reject: Callable[[int, list[FieldProblem]], None],
                line: int, problems: list[FieldProblem]) -> None:
        report.rejected += 1
        reject(line, problems)
        if any(p.reason in _DENIALS for p in problems):
            audit = self.vault.audit
            audit.append_committed(audit.event(
                self._principal, "records.import", collection=self._collection,
                fields=[p.field for p in problems], purpose=self._purpose, decision="deny",
                reason=next(p.reason for p in problems if p.reason in _DENIALS),
                details={"line": line}))

    def _denied(self, spec: CollectionSpec, values: dict[str, Any],
                subject_attrs: dict[str, Any], subject_id: str | None) -> list[FieldProblem]:
        fields = tuple(values)
        decisions = self._decided.get(fields) if self._reusable else None
        if decisions is None:
            clear = {k: v for k, v in values.items() if not spec.fields[k].encrypted}
            decisions = self.vault.policy.decide(self._principal, "import", spec, self._purpose,
                                                 fields, clear, subject_attrs, subject_id)
            if self._reusable:
                self._decided[fields] = decisions
        return [FieldProblem(n, str(d.reason)) for n, d in decisions.items() if d.masking is None]

    @staticmethod
    def _count(report: ImportReport, stored: list[tuple[int, Batch]]) -> None:
        report.imported += len(stored)
        for _, b in stored:
            report.created_subject_ids += [s["id"] for s in b.subjects]
        report.subjects_created = len(report.created_subject_ids)

    def _existing(self, ids: set[str]) -> dict[str, Any]:
        """Active subjects among ``ids`` (restricted or erased ones take no new rows)."""
        if not ids:
            return {}
        with self.vault.db.read() as conn:
            rows = conn.execute(
                sa.select(subjects.c.id.label("subject_id"), subjects.c.attributes)
                .where(subjects.c.id.in_(ids), subjects.c.status == SubjectStatus.ACTIVE)
            ).all()
        return {r.subject_id: r for r in rows}


def _insert(conn: Any, batch: Batch) -> None:
    """The batch's rows through the driver's ``executemany`` (``store.insert_many``)."""
    store.insert_many(conn, subjects, batch.subjects)
    store.insert_many(conn, records, batch.records)
    store.insert_many(conn, blind_index, batch.index)
    for subject_id, attributes in batch.subject_attributes.items():
        store.set_subject_attributes(conn, subject_id, attributes)


class _SubjectChanged(Exception):
    pass


def write_reject(fh: TextIO) -> Callable[[int, list[FieldProblem]], None]:
    """A reject sink writing one JSON line per bad row: line number and reasons, no values."""
    def _write(line: int, problems: list[FieldProblem]) -> None:
        fh.write(_dumps({"line": line, "errors": [p.as_dict() for p in problems]}) + "\n")
    return _write
