"""Bulk import of CSV or JSON-lines files: good rows are committed in batches, every bad row is
reported with its line number and reasons (never its values), and no row is half-written."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from fiduciary.access.policy import FieldDecision
from fiduciary.crypto.aead import FieldCipher
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


#: (line, subject id or None for a new subject, values, attributes JSON for an existing
#: subject whose attributes the row changes) of a row admitted to a batch.
_Admitted = tuple[int, str | None, dict[str, Any], str | None]
#: (line, its rows, its field names, its row digest for the audit event) of a sealed row.
_Sealed = tuple[int, Batch, tuple[str, ...], dict[str, Any]]

#: The vault a sealing process works with: set in the parent just before it forks, so the
#: child inherits the keyring and the blind-index keys without their crossing a pipe.
_SEALING_VAULT: VaultService | None = None


def _seal_row(vault: VaultService, spec: CollectionSpec, now: datetime, line: int,
              subject_id: str | None, values: dict[str, Any], attributes: str | None,
              cipher: FieldCipher | None, ids: tuple[str, str] | None = None,
              index: bool = True) -> _Sealed:
    """A row's stored form: a new subject with its data key (``subject_id`` None; ``ids``,
    the new subject's and record's ids when the caller chose them), or the record of an
    existing subject under its ``cipher``; sealed, row-digested for the audit event and
    (``index``) indexed."""
    one = Batch()
    if subject_id is None:
        # Subject ids stay random (README, "Search and import speed"); record ids are
        # time-ordered (UUIDv7): each batch appends to the end of the id B-trees instead of
        # touching pages all over them; the id reveals the creation time, which the record
        # shows anyway (created_at).
        subject_id, record_id = ids or new_ids()
        key_row, cipher = vault.keys.new_key_row(subject_id, remember=False)
        one.subjects.append({"id": subject_id, "status": SubjectStatus.ACTIVE,
                             "created_at": now, "attributes": attributes or "{}"})
        one.subject_keys.append(key_row)
    else:
        record_id = ordered_id()
        if attributes is not None:
            one.subject_attributes[subject_id] = attributes
    assert cipher is not None
    clear, sealed = vault.codec.seal(spec, record_id, cipher, values, 1)
    row = {"id": record_id, "subject_id": subject_id, "collection": spec.name,
           "clear": _dumps(clear), "sealed": _dumps(sealed), "created_at": now,
           "updated_at": now, "version": 1}
    one.records.append(row)
    if index:  # not in the sealing process: the parent makes the index rows
        one.index = vault.codec.index_rows(spec, record_id, subject_id, values)
    return line, one, tuple(values), vault.codec.row_entry(row)


def new_ids() -> tuple[str, str]:
    """A new subject's id (random) and its first record's (time-ordered)."""
    return new_id(), ordered_id()


def _seal_new_subjects(collection: str, now: datetime,
                       rows: list[tuple[int, dict[str, Any], str, tuple[str, str]]]
                       ) -> list[tuple[_Sealed, list[tuple[str, bytes]]]]:
    """In the sealing process: (line, values, attributes JSON, ids) of rows for new subjects,
    sealed, with their blind-index digests: the parent makes the index rows (bare digests
    cross the pipe, and are unpickled, at a fraction of the rows' cost)."""
    vault = _SEALING_VAULT
    assert vault is not None
    spec = vault.collection(collection)
    return [(_seal_row(vault, spec, now, line, None, values, attrs, None, ids, index=False),
             vault.codec.digests(spec, values))
            for line, values, attrs, ids in rows]


class Importer:
    """``pipeline=True`` seals (data keys, AES-GCM, blind indexes, row digests) in a second
    process while this one validates, decides and inserts: on a 2-core machine the two halves
    of an import overlap. For command-line imports (the process forks: not inside a server)."""

    def __init__(self, vault: VaultService, batch_size: int = 1000,
                 pipeline: bool = False) -> None:
        self.vault = vault
        self.batch_size = batch_size
        self.pipeline = pipeline and "fork" in multiprocessing.get_all_start_methods()

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
        with ExitStack() as stack:
            pool = stack.enter_context(self._sealer()) if self.pipeline else None
            # The batch being sealed in the other process, stored once the next is handed over.
            sealing: Callable[[], list[_Sealed]] | None = None
            for batch in self._batches(spec, rows, report, reject):
                ready = self._seal(spec, batch, pool, report, reject)
                if sealing is not None:
                    self._store(spec, sealing(), report, reject)
                sealing = ready
                if progress:
                    progress(report.read)
            if sealing is not None:
                self._store(spec, sealing(), report, reject)
        if progress:
            progress(report.read)
        return report

    @contextmanager
    def _sealer(self) -> Iterator[Any]:
        global _SEALING_VAULT
        _SEALING_VAULT = self.vault
        pool = multiprocessing.get_context("fork").Pool(1)
        try:
            yield pool
        finally:
            pool.close()
            pool.join()
            _SEALING_VAULT = None

    def _batches(self, spec: CollectionSpec, rows: Iterable[ParsedRow], report: ImportReport,
                 reject: Callable[[int, list[FieldProblem]], None]
                 ) -> Iterator[list[tuple[int, str | None, dict[str, Any]]]]:
        """Validated rows, ``batch_size`` at a time; every bad row reported on the way."""
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
                values, _ = self.vault.validate_write(spec, parsed, self._purpose,
                                                      partial=False)
            except InvalidInput as exc:
                # A cell that failed to parse is already reported; skip its "required" echo.
                named = {p.field for p in problems}
                problems += [p for p in exc.fields if p.field not in named]
            if problems:
                self._reject(report, reject, line, problems)
                continue
            pending.append((line, subject_id, values))
            if len(pending) >= self.batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def _admit(self, spec: CollectionSpec, pending: list[tuple[int, str | None, dict[str, Any]]],
               report: ImportReport, reject: Callable[[int, list[FieldProblem]], None]
               ) -> tuple[list[_Admitted], dict[str, Any]]:
        """The rows of a batch the policy admits for subjects that may take them, and those
        existing subjects' rows."""
        known = self._existing({s for _, s, _ in pending if s and is_id(s)})
        attr_names = spec.subject_attributes
        admitted: list[_Admitted] = []
        for line, subject_id, values in pending:
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
            attributes = (_dumps(subject_attrs) if subject_id is None or new_attrs else None)
            admitted.append((line, subject_id, values, attributes))
        return admitted, known

    def _seal(self, spec: CollectionSpec,
              pending: list[tuple[int, str | None, dict[str, Any]]], pool: Any,
              report: ImportReport, reject: Callable[[int, list[FieldProblem]], None]
              ) -> Callable[[], list[_Sealed]]:
        """Admit a batch and start sealing it: in the other process (rows for new subjects)
        when pipelined; returns what completes it, in the batch's row order."""
        admitted, known = self._admit(spec, pending, report, reject)
        now = self.vault.clock.now()
        ciphers = self.vault.keys.ciphers(known) if known else {}
        new = [(line, values, attrs or "{}", new_ids()) for line, sid, values, attrs in admitted
               if sid is None]
        if pool is None or not new:
            done = [_seal_row(self.vault, spec, now, line, sid, values, attrs,
                              ciphers.get(sid) if sid else None)
                    for line, sid, values, attrs in admitted]
            return lambda: done
        job = pool.apply_async(_seal_new_subjects, (spec.name, now, new))
        existing = {line: _seal_row(self.vault, spec, now, line, sid, values, attrs,
                                    ciphers[sid])
                    for line, sid, values, attrs in admitted if sid is not None}
        index_rows_of = self.vault.codec.index_rows_of

        def finish() -> list[_Sealed]:
            sealed: dict[int, _Sealed] = {}
            for item, digests in job.get():
                line, one = item[0], item[1]
                record = one.records[0]
                one.index = index_rows_of(spec, record["id"], record["subject_id"], digests)
                sealed[line] = item
            return [sealed.get(line) or existing[line] for line, *_ in admitted]
        return finish

    def _store(self, spec: CollectionSpec, prepared: list[_Sealed], report: ImportReport,
               reject: Callable[[int, list[FieldProblem]], None]) -> None:
        """One transaction for the batch and its event; row by row if that fails."""
        if not prepared:
            return
        keys = self.vault.keys
        whole = Batch()
        for _, one, _, _ in prepared:
            whole.extend(one)
        # New subjects' keys are stored before the subjects: none exists without its key.
        keys.store.put(whole.subject_keys)
        try:
            with self.vault.db.write() as conn:
                if not self._still_active(conn, whole):
                    raise _SubjectChanged()
                _insert(conn, whole)
                self._audit(conn, spec, prepared)
            self._count(report, prepared)
            return
        except _SubjectChanged:
            log.warning("a subject of the batch was erased or restricted meanwhile; "
                        "storing row by row")
        except sa.exc.DBAPIError as exc:
            log.warning("batch insert failed (%s); retrying row by row", type(exc).__name__)
        for item in prepared:
            line, one = item[0], item[1]
            try:
                with self.vault.db.write() as conn:
                    if not self._still_active(conn, one):
                        raise _SubjectChanged()
                    _insert(conn, one)
                    self._audit(conn, spec, [item])
                self._count(report, [item])
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

    def _audit(self, conn: Any, spec: CollectionSpec, stored: list[_Sealed]) -> None:
        """The rows and their event commit together."""
        audit = self.vault.audit
        rows = [r for _, one, _, _ in stored for r in one.records]
        audit.append(conn, audit.event(
            self._principal, "records.import", collection=spec.name,
            record_ids=[r["id"] for r in rows], subject_ids=[r["subject_id"] for r in rows],
            fields={f for _, _, names, _ in stored for f in names},
            purpose=self._purpose, details={
                "rows": len(rows),
                "subjects_created": sum(len(one.subjects) for _, one, _, _ in stored),
                # Each row's keyed digest as stored (vault.rollback checks rows against it).
                "row_digests": {one.records[0]["id"]: entry
                                for _, one, _, entry in stored}}))

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
    def _count(report: ImportReport, stored: list[_Sealed]) -> None:
        report.imported += len(stored)
        for _, b, _, _ in stored:
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
