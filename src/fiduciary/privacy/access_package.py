"""The package that answers an access or portability request (GDPR Art. 15 and 20, CCPA right
to know): every record of the subject in clear, why and on what basis each collection is held,
who receives it, how long it is kept, the consent history and who accessed the data — as
machine-readable JSON and as a readable HTML page, written for the DPO to download.

Staff who touched the data are shown by role and kind, not by name: the subject learns which
functions of the insurer saw their data (Art. 15(1)(c)) without the package disclosing
employees' identities.

The files are sealed (AES-256-GCM) under the subject's own data key, so they are ciphertext on
disk and in backups, and an erasure (which destroys that key, and deletes the files) leaves
nothing readable. They are opened only on download.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from fiduciary.access.policy import PolicyEngine
from fiduciary.audit.events import AuditLog
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock, iso_or_none
from fiduciary.crypto.aead import DecryptionError
from fiduciary.errors import FieldProblem, IntegrityFailure, InvalidInput, NotFound
from fiduciary.ids import is_id
from fiduciary.principal import Permission, Principal, Scope, require_permission, require_training
from fiduciary.privacy.ropa import retention_rule, third_party
from fiduciary.storage.schema import dsr_requests
from fiduciary.vault.service import VaultService

FORMAT = "fiduciary-access-package/1"
_PACKAGE_NAME = "access-{id}.{fmt}.sealed"  # in a directory per subject
#: The associated data's "collection": a package can never pass for a record's field.
_AD_COLLECTION = "_access_package"
_MEDIA = {"json": "application/json", "html": "text/html; charset=utf-8"}


class ConsentHistory(Protocol):
    def history(self, subject_id: str) -> Iterable[Any]: ...


class AccessPackager:
    def __init__(self, vault: VaultService, policy: PolicyEngine, consent: ConsentHistory,
                 trail: AuditTrail, audit: AuditLog, clock: Clock, out_dir: Path) -> None:
        self.vault = vault
        self.policy = policy
        self.consent = consent
        self.trail = trail
        self.audit = audit
        self.clock = clock
        self.out_dir = out_dir

    def build(self, principal: Principal, subject_id: str,
              request_id: str | None = None) -> dict[str, Any]:
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        require_training(principal)
        found = self.vault.disclose_subject(principal, subject_id, request_id)
        package_id = str(uuid.uuid4())
        now = self.clock.now()
        doc = {
            "format": FORMAT,
            "package_id": package_id,
            "request_id": request_id,
            "subject_id": subject_id,
            "generated_at": iso_or_none(now),
            "controller": self.vault.datamap.controller,
            "records": [r.as_dict() | {"withheld": []} for r in found],
            "collections": self._collections(sorted({r.collection for r in found})),
            "consent_history": [e.as_dict() for e in self.consent.history(subject_id)],
            "access_log": self._access_log(subject_id),
            "requests": self._requests(subject_id),
        }
        body = json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False)
        digest = hashlib.sha256(body.encode()).hexdigest()
        self._dir(subject_id).mkdir(parents=True, exist_ok=True, mode=0o700)
        cipher = self.vault.keys.cipher_for(subject_id)
        paths = {}
        for fmt, text in (("json", body), ("html", render_html(doc))):
            paths[fmt] = self._file(subject_id, package_id, fmt)
            _write_private(paths[fmt], cipher.encrypt(_AD_COLLECTION, package_id, fmt,
                                                      text.encode()))
        self.audit.append_committed(self.audit.event(
            principal, "dsr.access_package", subject_ids=[subject_id],
            record_ids=[r.id for r in found], purpose="legal_obligation",
            details={"package_id": package_id, "request_id": request_id,
                     "records": len(found), "sha256": digest}))
        return {"package_id": package_id, "files": [p.name for p in paths.values()],
                "records": len(found), "sha256": digest, "generated_at": iso_or_none(now)}

    def download(self, principal: Principal, result: Mapping[str, Any] | None,
                 subject_id: str, fmt: str) -> tuple[bytes, str]:
        """The opened package of a request and its media type, for the DPO to hand over; each
        download audited. 410 once the subject is erased."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        require_training(principal)
        if fmt not in _MEDIA:
            raise InvalidInput("format is json or html", [FieldProblem("format", "json|html")])
        package = (result or {}).get("package")
        if not isinstance(package, Mapping):
            raise NotFound("this request has no access package", code="package_not_found")
        package_id = str(package.get("package_id"))
        cipher = self.vault.keys.cipher_for(subject_id)  # Gone (410) after an erasure
        path = self._file(subject_id, package_id, fmt)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise NotFound("the package file is no longer there", code="package_not_found"
                           ) from None
        try:
            text = cipher.decrypt(_AD_COLLECTION, package_id, fmt, blob)
        except DecryptionError:
            raise IntegrityFailure(f"access package {package_id} failed its integrity check"
                                   ) from None
        self.audit.append_committed(self.audit.event(
            principal, "dsr.package_download", subject_ids=[subject_id],
            purpose="legal_obligation", details={"package_id": package_id, "format": fmt}))
        return text, _MEDIA[fmt]

    def delete_for(self, subject_id: str) -> int:
        """Remove a subject's package files (every erasure does): one directory per subject,
        so this costs the subject's packages, not everyone's."""
        if not is_id(subject_id):
            return 0
        folder = self._dir(subject_id)
        if not folder.is_dir():
            return 0
        gone = 0
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
            gone += 1
        folder.rmdir()
        return gone

    def _dir(self, subject_id: str) -> Path:
        return self.out_dir / subject_id

    def _file(self, subject_id: str, package_id: str, fmt: str) -> Path:
        try:
            uuid.UUID(package_id)
        except ValueError:
            raise InvalidInput("not a package id", [FieldProblem("package_id", "a uuid")]
                               ) from None
        if not is_id(subject_id):
            raise InvalidInput("not a subject id", [FieldProblem("subject_id", "a uuid")])
        return self._dir(subject_id) / _PACKAGE_NAME.format(id=package_id, fmt=fmt)

    def _collections(self, names: list[str]) -> list[dict[str, Any]]:
        dm = self.vault.datamap
        out = []
        for name in names:
            spec = dm.collections.get(name)
            if spec is None:
                continue
            roles = sorted(r.name for r in self.policy.pack.roles.values()
                           if any(name in g.collections and "read" in g.actions
                                  for g in r.grants))
            out.append({
                "collection": name,
                "description": spec.description,
                "purposes": sorted({p for f in spec.fields.values() for p in f.purposes}),
                "lawful_basis": spec.lawful_basis.value,
                "special_category_condition": (spec.special_category_condition.value
                                               if spec.special_category_condition else None),
                "retention": retention_rule(spec),
                "recipients": {
                    "internal_roles": roles,
                    "third_parties": [third_party(tp, [name]) for tp in dm.third_parties
                                      if name in tp.collections],
                },
            })
        return out

    def _access_log(self, subject_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            items, cursor = self.trail.events(subject_id=subject_id, limit=1000, cursor=cursor)
            for item in items:
                e = item["event"]
                out.append({"time": e["time"], "action": e["action"],
                            "by": {"kind": e["actor"]["kind"], "roles": e["actor"]["roles"]},
                            "collection": e["collection"], "purpose": e["purpose"],
                            "decision": e["decision"], "fields": e["fields"]})
            if cursor is None:
                return out

    def _requests(self, subject_id: str) -> list[dict[str, Any]]:
        with self.vault.db.read() as conn:
            rows = conn.execute(sa.select(
                dsr_requests.c.id, dsr_requests.c.type, dsr_requests.c.regime,
                dsr_requests.c.status, dsr_requests.c.received_at, dsr_requests.c.due_at,
                dsr_requests.c.closed_at).where(dsr_requests.c.subject_id == subject_id)
                .order_by(dsr_requests.c.received_at)).all()
        return [{"id": r.id, "type": r.type, "regime": r.regime, "status": r.status,
                 "received_at": iso_or_none(r.received_at), "due_at": iso_or_none(r.due_at),
                 "closed_at": iso_or_none(r.closed_at)} for r in rows]


def _write_private(path: Path, blob: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)


def _cell(value: Any) -> str:
    if isinstance(value, Mapping | list):
        value = json.dumps(value, ensure_ascii=False)
    return html.escape("" if value is None else str(value))


def _table(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p><em>None.</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(doc: Mapping[str, Any]) -> str:
    """A readable page of the package; every value escaped."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Your personal data</title><style>body{font-family:sans-serif;margin:2em;"
        "max-width:70em}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px "
        "solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eee}"
        "</style></head><body>",
        "<h1>Your personal data</h1>",
        f"<p>Generated {_cell(doc['generated_at'])} by {_cell(doc['controller'].get('name'))}"
        f" for request {_cell(doc['request_id'])}. Subject reference "
        f"{_cell(doc['subject_id'])}.</p>",
        "<h2>What we hold, why, and for how long</h2>",
    ]
    for c in doc["collections"]:
        parts.append(f"<h3>{_cell(c['collection'])}</h3><p>{_cell(c['description'])}</p>")
        parts.append(_table([{
            "purposes": ", ".join(c["purposes"]), "lawful basis": c["lawful_basis"],
            "special category condition": c["special_category_condition"],
            "retention": c["retention"]["description"] or
            f"{c['retention']['period']} from {c['retention']['from']}",
            "recipients inside the insurer": ", ".join(c["recipients"]["internal_roles"]),
            "recipients outside the insurer": ", ".join(
                f"{t['name']} ({t['kind']}, {t['country']})"
                for t in c["recipients"]["third_parties"]),
        }], ["purposes", "lawful basis", "special category condition", "retention",
             "recipients inside the insurer", "recipients outside the insurer"]))
        for r in doc["records"]:
            if r["collection"] == c["collection"]:
                parts.append(f"<p>Record {_cell(r['id'])}, created {_cell(r['created_at'])}"
                             f", updated {_cell(r['updated_at'])}</p>")
                parts.append(_table([{"field": k, "value": v} for k, v in r["data"].items()],
                                    ["field", "value"]))
    parts.append("<h2>Your consents</h2>")
    parts.append(_table(doc["consent_history"], ["recorded_at", "purpose", "granted",
                                                 "notice_version", "method", "channel"]))
    parts.append("<h2>Who accessed your data</h2>")
    parts.append(_table([{**e, "by": f"{e['by']['kind']} "
                          f"({', '.join(e['by']['roles'])})"} for e in doc["access_log"]],
                        ["time", "action", "by", "collection", "purpose", "decision"]))
    parts.append("<h2>Your requests</h2>")
    parts.append(_table(doc["requests"], ["received_at", "type", "regime", "status",
                                          "due_at", "closed_at"]))
    parts.append("</body></html>")
    return "".join(parts)
