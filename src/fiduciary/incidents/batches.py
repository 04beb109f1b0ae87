"""Letter batches: an incident's notification letters rendered as one batch, recorded in
``letter_batches`` (``running``, then ``done`` or ``failed``, with its total and how many are
rendered so far), in the background for the API or in the foreground for the CLI.

What would refuse the batch is checked before it exists, so that a refusal leaves nothing
behind and reaches the caller: ``incidents:manage``, current training, and whether the policy
lets the caller read a person's name and address in clear for ``legal_obligation`` (the
letters decrypt them as the caller: a DPO may, a security analyst may not); the incident, its
scope and the letter texts the affected people's letters need. Rendering itself (the vault's
reads, the sealed files, the manifest, the audit event) is :class:`LetterService`'s::

    start / render(principal, incident_id, texts)
      ├── checks above                        → refused: no batch, nothing read or written
      ├── letter_batches row (running, total)
      └── LetterService.render_batch(...)     → progress(done, total) updates the row
            ├── manifest                      → done (path of the batch's folder)
            └── any failure                   → failed (its folder removed by the service)
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fiduciary.audit.events import AuditLog, actor_label
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.errors import NotFound, WorkflowConflict
from fiduciary.ids import is_id, new_id, shown
from fiduciary.incidents.letters import MANIFEST, LetterService, LetterText
from fiduciary.incidents.register import IncidentService
from fiduciary.principal import (
    Permission,
    Principal,
    Scope,
    require_permission,
    require_training,
)
from fiduciary.storage import Database
from fiduciary.storage.schema import incident_affected, letter_batches

log = logging.getLogger("fiduciary.incidents.letters")

#: Where the batches go, under the data directory.
LETTERS_DIR = "letters"
#: At most one progress write a second (plus the last): rendering sets the pace, not SQL.
_PROGRESS_SECONDS = 1.0

Progress = Callable[[int, int], None]


class BatchStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class _Batch:
    batch_id: str
    principal: Principal
    incident: dict[str, Any]
    affected: list[tuple[str, str, list[str]]]


class LetterBatches:
    """Starts, runs and reports letter batches (``incidents:manage`` to render,
    ``incidents:read`` to follow one)."""

    def __init__(self, db: Database, clock: Clock, audit: AuditLog,
                 incidents: IncidentService, letters: LetterService) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.incidents = incidents
        self.letters = letters

    def start(self, principal: Principal, incident_id: str, texts: Mapping[str, Any]) -> str:
        """Check, record and start a batch in a background thread; its id."""
        batch = self._prepare(principal, incident_id, texts)
        # The thread carries the request's context: its audit events name the request.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._background, batch),
                         name=f"letters-{batch.batch_id[:8]}", daemon=True).start()
        return batch.batch_id

    def render(self, principal: Principal, incident_id: str, texts: Mapping[str, Any],
               progress: Progress | None = None) -> dict[str, Any]:
        """Check, record and render a batch here; its manifest, with ``path``."""
        return self._run(self._prepare(principal, incident_id, texts), progress)

    def batch(self, principal: Principal, incident_id: str, batch_id: str) -> dict[str, Any]:
        """A batch's state, and its manifest once done (ids, templates, reason codes and
        digests: no contact data)."""
        require_permission(principal, Permission.INCIDENTS_READ, Permission.INCIDENTS_MANAGE,
                           scope=None)
        with self.db.read() as conn:
            row = conn.execute(sa.select(letter_batches).where(
                letter_batches.c.id == batch_id,
                letter_batches.c.incident_id == incident_id)).first() \
                if is_id(batch_id) and is_id(incident_id) else None
        if row is None:
            raise NotFound(f"letter batch {shown(batch_id)} not found",
                           code="letter_batch_not_found")
        manifest = None
        if row.status == BatchStatus.DONE and row.path:
            try:
                manifest = json.loads((Path(row.path) / MANIFEST).read_text("utf-8"))
            except FileNotFoundError:  # the batch's folder was removed since
                manifest = None
        self.audit.append_committed(self.audit.event(
            principal, "incident.letters_read",
            details={"incident_id": incident_id, "batch_id": batch_id}))
        return {**self._state(row), "manifest": manifest}

    def batches(self, principal: Principal, incident_id: str) -> list[dict[str, Any]]:
        """An incident's batches, newest first, without their manifests (the console's
        incident page: which are running, done or failed)."""
        require_permission(principal, Permission.INCIDENTS_READ, Permission.INCIDENTS_MANAGE,
                           scope=None)
        with self.db.read() as conn:
            rows = conn.execute(sa.select(letter_batches).where(
                letter_batches.c.incident_id == incident_id).order_by(
                letter_batches.c.created_at.desc(), letter_batches.c.id)).all() \
                if is_id(incident_id) else []
        self.audit.append_committed(self.audit.event(
            principal, "incident.letters_read",
            details={"incident_id": incident_id, "result_count": len(rows)}))
        return [self._state(r) for r in rows]

    @staticmethod
    def _state(row: Any) -> dict[str, Any]:
        return {"id": row.id, "incident_id": row.incident_id, "status": row.status,
                "total": row.total, "done": row.done, "created_by": row.created_by,
                "created_at": iso(row.created_at), "finished_at": iso_or_none(row.finished_at)}

    # -- the steps -----------------------------------------------------------------------------
    def _prepare(self, principal: Principal, incident_id: str, texts: Mapping[str, Any]
                 ) -> _Batch:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=Scope.READ)
        require_training(principal)
        # The policy's refusal comes first, before anything is read.
        self.letters._require_contact_read(principal)
        incident = self.incidents.get(principal, incident_id)
        if incident["status"] == "closed":
            raise WorkflowConflict("the incident is closed", reason="incident_closed")
        if incident["scope_result"] is None:
            raise WorkflowConflict("the incident has no scope yet", reason="no_scope")
        with self.db.read() as conn:
            affected = [(r.subject_id, r.jurisdiction, r.classifications.split())
                        for r in conn.execute(sa.select(
                            incident_affected.c.subject_id, incident_affected.c.jurisdiction,
                            incident_affected.c.classifications).where(
                            incident_affected.c.incident_id == incident_id)
                            .order_by(incident_affected.c.subject_id))]
        given = incident.get("letter")
        incident["letter"] = {**(given if isinstance(given, Mapping) else {}), **texts}
        LetterText.from_incident(incident, affected)  # a missing text: refused here
        batch_id = new_id()
        with self.db.write() as conn:
            conn.execute(letter_batches.insert(), [{
                "id": batch_id, "incident_id": incident_id, "status": BatchStatus.RUNNING,
                "total": len(affected), "done": 0,
                "created_by": actor_label(principal)[:128], "created_at": self.clock.now(),
                "finished_at": None, "path": ""}])
        return _Batch(batch_id, principal, incident, affected)

    def _background(self, batch: _Batch) -> None:
        try:
            self._run(batch, None)
        except Exception as exc:
            # Recorded as failed (unless the database went too); types only, never values.
            log.warning("letter batch %s failed: %s", batch.batch_id, type(exc).__name__)

    def _run(self, batch: _Batch, progress: Progress | None) -> dict[str, Any]:
        last = time.monotonic()

        def step(done: int, total: int) -> None:
            nonlocal last
            if progress is not None:
                progress(done, total)
            if time.monotonic() - last >= _PROGRESS_SECONDS:
                last = time.monotonic()
                self._update(batch.batch_id, done=done)

        try:
            manifest = self.letters.render_batch(batch.principal, batch.incident,
                                                 batch.affected, batch.batch_id, step)
        except BaseException:
            self._update(batch.batch_id, status=BatchStatus.FAILED,
                         finished_at=self.clock.now())
            raise
        self._update(batch.batch_id, status=BatchStatus.DONE, done=len(batch.affected),
                     finished_at=self.clock.now(), path=str(Path(manifest["path"]).parent))
        return manifest

    def _update(self, batch_id: str, **values: Any) -> None:
        with self.db.write() as conn:
            conn.execute(letter_batches.update().where(letter_batches.c.id == batch_id)
                         .values(**values))
