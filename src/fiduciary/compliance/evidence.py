"""The evidence pack (issue 14 item 3): one zip an examiner verifies offline.

What it holds, for a period ``[start, end)``::

    controls.json         every control's latest result in the period with its facts, and
                          every result of the period (a check is run when there is none)
    events/<id>.json      each audit event those facts and the period's compliance runs rest
                          on: its canonical JSON, leaf index and RFC 9162 inclusion proof
    checkpoints/<n>.json  the signed checkpoint (Ed25519) those proofs lead to
    ropa.json             records of processing (GDPR 30) as configured now
    dsr_log.json / .csv   the request log of CCPA regs 7101: dates, type, channel, response,
                          denial reason; subject ids, never a customer value
    breach_register.json  incidents (no sealed text) and their notification obligations
    training.json         training records in force during the period
    reviews.json          access review campaigns, their decisions, and single reviews
    verify_pack.py        the standalone verifier
    manifest.json         the SHA-256 of every file above
    manifest.sig          Ed25519 signature of the manifest by the audit signing key
    anchor.json           the ``compliance.evidence_pack`` audit event carrying the
                          manifest's SHA-256, with its inclusion proof and checkpoint

The manifest is signed with the key that signs the audit checkpoints (derived from the
keyring, never stored), and packing writes an audit event carrying the manifest's digest,
so a pack is both signed and recorded in the trail it draws on: a pack the trail did not
record has no anchor that verifies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog, audit_actor
from fiduciary.audit.trail import AuditTrail, Checkpoint
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.compliance import verify_pack
from fiduciary.compliance.model import ControlResult
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.privacy.ropa import RopaService, build_ropa, ropa_event_details
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    access_reviews,
    audit_events,
    dsr_requests,
    incident_affected,
    incident_obligations,
    incidents,
    review_campaigns,
    review_items,
    training_records,
    users,
)

PACK_ACTION = verify_pack.PACK_ACTION
PACK_FORMAT = "fiduciary-evidence-pack/1"
#: Audit actions of the compliance runs themselves (checks, attestations, earlier packs).
COMPLIANCE_ACTIONS = "compliance.%"
_DENIED = ("denied", "partially_fulfilled")
# Cells a spreadsheet would run as a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class PostureResults(Protocol):
    """What the pack needs of the posture service."""

    def check(self, now: datetime | None = None, *, by: Principal | None = None
              ) -> list[ControlResult]: ...

    def results_between(self, start: datetime, end: datetime) -> list[ControlResult]: ...


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC; written ``FROM..TO`` with both days included."""

    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start.date().isoformat()}..{(self.end - timedelta(days=1)).date()}"

    @classmethod
    def parse(cls, text: str) -> Period:
        """``2026-07-01..2026-09-30`` (ISO dates, TO included): InvalidInput naming
        ``period`` otherwise."""
        first, sep, last = text.strip().partition("..")
        try:
            if not sep:
                raise ValueError
            start, end = date.fromisoformat(first), date.fromisoformat(last)
        except ValueError:
            raise InvalidInput.from_problems([FieldProblem(
                "period", "FROM..TO as ISO dates, e.g. 2026-07-01..2026-09-30")]) from None
        if end < start:
            raise InvalidInput.from_problems([FieldProblem("period", "TO is before FROM")])
        if end >= date.max:
            raise InvalidInput.from_problems([FieldProblem("period", "TO is out of range")])
        return cls(_midnight(start), _midnight(end + timedelta(days=1)))

    @classmethod
    def last_full_quarter(cls, now: datetime) -> Period:
        """The calendar quarter before the one ``now`` falls in (UTC)."""
        q_start = date(now.year, 3 * ((now.month - 1) // 3) + 1, 1)
        prev = date(q_start.year - 1, 10, 1) if q_start.month == 1 else \
            date(q_start.year, q_start.month - 3, 1)
        return cls(_midnight(prev), _midnight(q_start))


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class PackSummary:
    """What was written, for the CLI and the API to report."""

    path: Path
    period: Period
    files: int
    proofs: int
    manifest_sha256: str
    public_key: str
    checkpoint_size: int
    checked_now: bool

    @property
    def fingerprint(self) -> str:
        return verify_pack.fingerprint(bytes.fromhex(self.public_key))

    def as_dict(self) -> dict[str, Any]:
        return {"output": str(self.path), "period": self.period.label, "files": self.files,
                "inclusion_proofs": self.proofs, "manifest_sha256": self.manifest_sha256,
                "public_key": self.public_key, "public_key_sha256": self.fingerprint,
                "checkpoint_size": self.checkpoint_size, "checked_now": self.checked_now}


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class EvidencePacker:
    """Builds, signs and records evidence packs. Reads every table it reports on directly
    (read-only, one transaction), so a pack is one consistent view of the store."""

    def __init__(self, db: Database, clock: Clock, audit: AuditLog, trail: AuditTrail,
                 posture: PostureResults, ropa: RopaService) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.trail = trail
        self.posture = posture
        self.ropa = ropa

    def pack(self, principal: Principal, period: Period, output: Path) -> PackSummary:
        """Write the pack for ``period`` to ``output`` (atomically) and record it."""
        require_permission(principal, Permission.COMPLIANCE_READ, scope=None)
        _writable(output)  # before anything is checked, packed or audited
        now = self.clock.now()
        results = self.posture.results_between(period.start, period.end)
        checked_now = not results
        if checked_now:
            results = self.posture.check(now, by=principal)
        self._sequence_all()
        files: dict[str, bytes] = {}
        with self.db.read() as conn:
            cp = self.trail.checkpoint_in(conn)
            event_ids = _event_ids(results, _compliance_events(conn, period))
            proven, unproven = self._proofs(conn, event_ids, cp)
            files["controls.json"] = _dumps(_controls(results, period, now, checked_now,
                                                       unproven))
            for eid, doc in proven.items():
                files[f"events/{eid}.json"] = _dumps(doc)
            if cp is not None and proven:
                files[f"checkpoints/{cp.size}.json"] = _dumps(cp.as_dict())
            ropa = build_ropa(self.ropa.datamap, self.ropa.policy, self.ropa.keyring.versions(),
                              self.ropa.settings, now)
            files["ropa.json"] = _dumps(ropa)
            dsr = _dsr_log(conn, period)
            files["dsr_log.json"] = _dumps({"period": period.label, "requests": dsr})
            files["dsr_log.csv"] = _csv(dsr)
            files["breach_register.json"] = _dumps(_breach_register(conn, period))
            files["training.json"] = _dumps(_training(conn, period))
            files["reviews.json"] = _dumps(_reviews(conn, period))
        files["verify_pack.py"] = Path(verify_pack.__file__).read_bytes()
        public_key = self.trail.public_key.hex()
        manifest = _dumps({
            "format": PACK_FORMAT, "period": {"from": iso(period.start), "to": iso(period.end),
                                              "label": period.label},
            "created_at": iso(now), "public_key": public_key,
            "public_key_sha256": verify_pack.fingerprint(self.trail.public_key),
            "checkpoint_size": cp.size if cp else None,
            "files": {name: hashlib.sha256(data).hexdigest()
                      for name, data in sorted(files.items())}})
        signature = {"algorithm": "Ed25519", "public_key": public_key,
                     "signed": "'fiduciary-evidence-manifest-v1\\n' followed by manifest.json",
                     "signature": self.trail.key.sign(verify_pack.MANIFEST_CONTEXT
                                                      + manifest).hex()}
        digest = hashlib.sha256(manifest).hexdigest()
        anchor = self._anchor(principal, period, digest, ropa, len(proven), output)
        files[verify_pack.MANIFEST] = manifest
        files[verify_pack.SIGNATURE] = _dumps(signature)
        files[verify_pack.ANCHOR] = _dumps(anchor)
        _write_zip(output, files)
        return PackSummary(output, period, len(files), len(proven) + 1, digest, public_key,
                           cp.size if cp else 0, checked_now)

    # -- the trail -------------------------------------------------------------------------
    def _sequence_all(self) -> int:
        """Sequence everything pending and sign a checkpoint over it, so every event the
        pack names can be proven."""
        size = -1
        while (new := self.trail.sequence(batch_size=50_000)) != size:
            size = new
        return self.trail.sequence(force_checkpoint=True)

    def _proofs(self, conn: Connection, event_ids: list[str], cp: Checkpoint | None
                ) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        proofs = self.trail.event_proofs(conn, event_ids, cp.size if cp else None)
        proven: dict[str, dict[str, Any]] = {}
        unproven: dict[str, list[str]] = {"pruned": [], "not_in_trail": [], "not_covered": []}
        for eid in event_ids:
            leaf, text, proof = proofs.get(eid, (None, None, None))
            if leaf is None:
                unproven["not_in_trail"].append(eid)
            elif text is None:
                unproven["pruned"].append(eid)
            elif proof is None or cp is None:
                unproven["not_covered"].append(eid)
            else:
                proven[eid] = _proven(eid, leaf, text, cp.size, proof)
        return proven, unproven

    def _anchor(self, principal: Principal, period: Period, digest: str, ropa: dict[str, Any],
                events: int, output: Path) -> dict[str, Any]:
        """Record the pack in the trail and prove that record against a new checkpoint."""
        event = self.audit.event(audit_actor(principal), PACK_ACTION, details={
            "manifest_sha256": digest, "period": period.label, "events": events,
            "output": output.name, "ropa": ropa_event_details(ropa, "json")})
        self.audit.append_committed(event)
        self._sequence_all()
        with self.db.read() as conn:
            cp = self.trail.checkpoint_in(conn)
            leaf, text, proof = self.trail.event_proofs(
                conn, [event["id"]], cp.size if cp else None).get(event["id"],
                                                                  (None, None, None))
        if cp is None or leaf is None or text is None or proof is None:
            # Cannot happen while the sequencer signs on demand; the verifier rejects it.
            return {"event_id": event["id"], "checkpoint": None}
        return {**_proven(event["id"], leaf, text, cp.size, proof), "checkpoint": cp.as_dict()}


def _proven(event_id: str, leaf: int, text: str, size: int, proof: list[bytes]
            ) -> dict[str, Any]:
    return {"event_id": event_id, "leaf_index": leaf, "checkpoint_size": size,
            "inclusion_proof": [p.hex() for p in proof],
            # The exact bytes the leaf hash covers (RFC 8785): hash it as it stands.
            "canonical_event": text}


def _part(output: Path) -> Path:
    return output.with_name(output.name + ".part")


def _writable(output: Path) -> None:
    part = _part(output)
    try:
        part.touch()
        part.unlink()
    except OSError:
        raise InvalidInput.from_problems([FieldProblem(
            "output", "cannot be written there (no such directory, or not permitted)")]
        ) from None


def _write_zip(output: Path, files: dict[str, bytes]) -> None:
    part = _part(output)
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, files[name])
    os.replace(part, output)


# -- what the pack reports -------------------------------------------------------------------
def _compliance_events(conn: Connection, period: Period) -> list[str]:
    return list(conn.execute(sa.select(audit_events.c.event_id).where(
        audit_events.c.action.like(COMPLIANCE_ACTIONS),
        audit_events.c.at >= period.start, audit_events.c.at < period.end)
        .order_by(audit_events.c.seq)).scalars())


def _event_ids(results: Sequence[ControlResult], extra: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for r in results:
        seen.update(dict.fromkeys(r.outcome.event_ids))
    seen.update(dict.fromkeys(extra))
    return list(seen)


def _controls(results: Sequence[ControlResult], period: Period, now: datetime,
              checked_now: bool, unproven: dict[str, list[str]]) -> dict[str, Any]:
    latest: dict[str, ControlResult] = {}
    for r in sorted(results, key=lambda r: r.checked_at):
        latest[r.control.id] = r
    summary = {s: sum(1 for r in latest.values() if r.status.value == s)
               for s in ("pass", "fail", "not_applicable")}
    return {
        "period": {"from": iso(period.start), "to": iso(period.end), "label": period.label},
        "generated_at": iso(now),
        # No result stored in the period: these are today's results, not the period's.
        "checked_at_packing": checked_now,
        "summary": summary,
        "controls": [latest[k].as_json() for k in sorted(latest)],
        "results": [r.as_json() for r in sorted(results, key=lambda r: (r.checked_at,
                                                                         r.control.id))],
        "events_without_proof": unproven,
    }


def _dsr_log(conn: Connection, period: Period) -> list[dict[str, Any]]:
    """Requests received in the period or still open in it (CCPA regs 7101(a))."""
    r = dsr_requests.c
    rows = conn.execute(sa.select(dsr_requests).where(
        r.received_at < period.end,
        sa.or_(r.closed_at.is_(None), r.closed_at >= period.start))
        .order_by(r.received_at, r.id)).all()
    out = []
    for row in rows:
        days = (row.closed_at - row.received_at).total_seconds() / 86400 \
            if row.closed_at is not None else None
        out.append({
            "request_id": row.id, "subject_id": row.subject_id, "regime": row.regime,
            "type": row.type, "channel": row.channel, "received_at": iso(row.received_at),
            "acknowledged_at": iso_or_none(row.acknowledged_at),
            "due_at": iso(row.due_at), "extended": row.extension_reason is not None,
            "status": row.status, "responded_at": iso_or_none(row.closed_at),
            "days_to_respond": round(days, 2) if days is not None else None,
            "on_time": row.closed_at <= row.due_at if row.closed_at is not None else None,
            # The basis the privacy office gave for denying in whole or in part (7101(a)).
            "denial_reason": row.outcome_reason if row.status in _DENIED else None,
        })
    return out


_DSR_COLUMNS = ("request_id", "subject_id", "regime", "type", "channel", "received_at",
                "acknowledged_at", "due_at", "extended", "status", "responded_at",
                "days_to_respond", "on_time", "denial_reason")


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_DSR_COLUMNS)
    for row in rows:
        w.writerow([_cell(row[c]) for c in _DSR_COLUMNS])
    return buf.getvalue().encode()


def _breach_register(conn: Connection, period: Period) -> dict[str, Any]:
    """Incidents open at some time in the period, with their obligations; titles,
    descriptions and people's reasons stay sealed."""
    i = incidents.c
    rows = conn.execute(sa.select(incidents).where(
        i.discovered_at < period.end, sa.or_(i.closed_at.is_(None), i.closed_at >= period.start))
        .order_by(i.discovered_at, i.id)).all()
    ids = [r.id for r in rows]
    a = incident_affected.c
    affected: dict[str, int] = {r.incident_id: int(r.n) for r in conn.execute(
        sa.select(a.incident_id, sa.func.count().label("n")).where(a.incident_id.in_(ids))
        .group_by(a.incident_id))} if ids else {}
    obligations: dict[str, list[dict[str, Any]]] = {k: [] for k in ids}
    if ids:
        o = incident_obligations.c
        for ob in conn.execute(sa.select(incident_obligations).where(o.incident_id.in_(ids))
                               .order_by(o.incident_id, o.due_at, o.rule_id)):
            obligations[ob.incident_id].append({
                "rule_id": ob.rule_id, "regime": ob.regime, "recipient": ob.recipient,
                "basis": ob.basis, "due_at": iso_or_none(ob.due_at), "status": ob.status,
                "filed_at": iso_or_none(ob.filed_at), "reference": ob.reference,
                "decided_by": ob.decided_by,
                "on_time": (ob.filed_at <= ob.due_at) if ob.filed_at and ob.due_at else None})
    return {"period": period.label, "incidents": [{
        "incident_id": r.id, "kind": r.kind, "severity": r.severity, "status": r.status,
        "discovered_at": iso(r.discovered_at), "determined_at": iso_or_none(r.determined_at),
        "closed_at": iso_or_none(r.closed_at), "affected_subjects": int(affected.get(r.id, 0)),
        "obligations": obligations[r.id]} for r in rows]}


def _training(conn: Connection, period: Period) -> dict[str, Any]:
    """Completions in force at some time in the period."""
    t = training_records.c
    rows = conn.execute(
        sa.select(users.c.username, t.course, t.course_version, t.completed_at, t.expires_at,
                  t.source, t.evidence, t.recorded_at)
        .join(users, users.c.id == t.user_id)
        .where(t.completed_at < period.end.date(), t.expires_at >= period.start.date())
        .order_by(users.c.username, t.course, t.completed_at)).all()
    return {"period": period.label, "records": [{
        "username": r.username, "course": r.course, "course_version": r.course_version,
        "completed_on": r.completed_at.isoformat(), "expires_on": r.expires_at.isoformat(),
        "source": r.source, "evidence_reference": r.evidence,
        "recorded_at": iso(r.recorded_at)} for r in rows]}


def _reviews(conn: Connection, period: Period) -> dict[str, Any]:
    """Campaigns open at some time in the period with every decision (notes stay sealed),
    and the single account reviews recorded in it."""
    c = review_campaigns.c
    campaigns = conn.execute(sa.select(review_campaigns).where(
        c.created_at < period.end, sa.or_(c.completed_at.is_(None),
                                          c.completed_at >= period.start))
        .order_by(c.created_at, c.id)).all()
    ids = [r.id for r in campaigns]
    items: dict[str, list[dict[str, Any]]] = {k: [] for k in ids}
    if ids:
        it = review_items.c
        for r in conn.execute(sa.select(review_items).where(it.campaign_id.in_(ids))
                              .order_by(it.campaign_id, it.account_name, it.kind, it.id)):
            items[r.campaign_id].append({
                "item_id": r.id, "account_kind": r.account_kind, "account": r.account_name,
                "kind": r.kind, "entitlement": r.entitlement, "decision": r.decision,
                "decided_by": r.decided_by, "decided_at": iso_or_none(r.decided_at),
                "effect": r.effect})
    a = access_reviews.c
    single = conn.execute(sa.select(access_reviews).where(
        a.at >= period.start, a.at < period.end).order_by(a.at, a.id)).all()
    return {"period": period.label,
            "campaigns": [{"campaign_id": r.id, "scope": r.scope, "status": r.status,
                           "created_by": r.created_by, "created_at": iso(r.created_at),
                           "due_at": iso(r.due_at), "completed_at": iso_or_none(r.completed_at),
                           "items": items[r.id]} for r in campaigns],
            "account_reviews": [{"account_kind": r.account_kind, "account": r.account_name,
                                 "decision": r.decision, "reviewer": r.reviewer,
                                 "at": iso(r.at)} for r in single]}
