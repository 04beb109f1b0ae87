"""Whose data, exactly: an incident's affected subjects and records computed from the audit
trail, against one signed checkpoint, without anyone touching customer data.

A compromised principal exposed what its audit events say it was shown: a subject is
*decrypted* when some field above ``internal`` reached the principal in clear, *masked* when
it was only seen masked (or only its internal fields). A lost copy of the database (no
principal) exposed every stored record as ciphertext: *ciphertext only* while the keys were
not compromised (the encryption safe harbours), *decrypted* when they were. Jurisdictions come
from the clear ``persons.country`` and ``persons.state`` fields, never from a sealed one."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fiduciary.audit.trail import AuditTrail
from fiduciary.datamap import Classification, DataMap
from fiduciary.errors import FieldProblem, InvalidInput, NotFound
from fiduciary.monitoring.detectors import TOUCHES
from fiduciary.storage import Database
from fiduciary.storage.schema import api_keys, audit_events, records, users

DECRYPTED, MASKED, CIPHERTEXT_ONLY = "decrypted", "masked", "ciphertext_only"
EXPOSURES = (DECRYPTED, MASKED, CIPHERTEXT_ONLY)
_RANK = {DECRYPTED: 2, MASKED: 1, CIPHERTEXT_ONLY: 0}
_CHUNK = 500


@dataclass
class Exposure:
    exposure: str = CIPHERTEXT_ONLY
    classifications: set[str] = field(default_factory=set)
    records: set[str] = field(default_factory=set)
    event_id: str | None = None

    def raise_to(self, exposure: str) -> None:
        if _RANK[exposure] > _RANK[self.exposure]:
            self.exposure = exposure


@dataclass(frozen=True)
class ScopeRequest:
    principals: list[tuple[str, str]]  # (kind, actor id)
    since: datetime
    until: datetime
    collections: list[str] | None
    keys_compromised: bool

    def as_dict(self) -> dict[str, Any]:
        return {"principals": [{"kind": k, "id": i} for k, i in self.principals],
                "from": self.since.isoformat(), "to": self.until.isoformat(),
                "collections": self.collections, "keys_compromised": self.keys_compromised}


@dataclass
class ScopeResult:
    checkpoint_size: int
    subjects: dict[str, Exposure]
    jurisdictions: dict[str, str]

    def summary(self) -> dict[str, Any]:
        counts = dict.fromkeys(EXPOSURES, 0)
        by_jurisdiction: dict[str, int] = defaultdict(int)
        classes: set[str] = set()
        for sid, e in self.subjects.items():
            counts[e.exposure] += 1
            by_jurisdiction[self.jurisdictions.get(sid, "unknown")] += 1
            classes |= e.classifications
        exposed = [e for e in self.subjects.values() if e.exposure != CIPHERTEXT_ONLY]
        return {"subjects": counts,
                "records": len({r for e in self.subjects.values() for r in e.records}),
                "classifications": sorted(classes),
                "by_jurisdiction": dict(sorted(by_jurisdiction.items())),
                "checkpoint_size": self.checkpoint_size,
                # Only ciphertext left with keys safe: the encryption safe harbours apply.
                "safe_harbour": bool(self.subjects) and not exposed}


def parse_request(db: Database, body: Any) -> ScopeRequest:
    """Validate a scope as the API receives it, naming every bad field."""
    problems: list[FieldProblem] = []
    if not isinstance(body, dict):
        raise InvalidInput("scope must be an object", [FieldProblem("body", "an object")])
    principals: list[tuple[str, str]] = []
    raw = body.get("principals", [])
    if not isinstance(raw, list):
        problems.append(FieldProblem("principals", "a list"))
        raw = []
    with db.read() as conn:
        for i, p in enumerate(raw):
            where = f"principals[{i}]"
            kind = p.get("kind") if isinstance(p, dict) else None
            if kind == "user" and isinstance(p.get("username"), str):
                uid = conn.execute(sa.select(users.c.id).where(
                    users.c.username == p["username"])).scalar()
                if uid is None:
                    problems.append(FieldProblem(where, "no such user"))
                else:
                    principals.append(("user", str(uid)))
            elif kind == "api_key" and isinstance(p.get("id"), str):
                kid = conn.execute(sa.select(api_keys.c.id).where(
                    api_keys.c.id == p["id"])).scalar()
                if kid is None:
                    problems.append(FieldProblem(where, "no such API key"))
                else:
                    principals.append(("api_key", str(kid)))
            else:
                problems.append(FieldProblem(
                    where, '{"kind": "user", "username"} or {"kind": "api_key", "id"}'))
    since, until = body.get("from"), body.get("to")
    for name, v in (("from", since), ("to", until)):
        if not isinstance(v, datetime) or v.tzinfo is None:
            problems.append(FieldProblem(name, "a date-time with a time zone"))
    if isinstance(since, datetime) and isinstance(until, datetime) and since.tzinfo \
            and until.tzinfo and since >= until:
        problems.append(FieldProblem("to", "after from"))
    collections = body.get("collections")
    if collections is not None and (not isinstance(collections, list)
                                    or not all(isinstance(c, str) for c in collections)):
        problems.append(FieldProblem("collections", "a list of collection names"))
        collections = None
    keys = body.get("keys_compromised", False)
    if not isinstance(keys, bool):
        problems.append(FieldProblem("keys_compromised", "true or false"))
    if problems:
        raise InvalidInput.from_problems(problems, what="scope")
    assert isinstance(since, datetime) and isinstance(until, datetime)
    return ScopeRequest(principals, since, until, collections, bool(keys))


class ScopeCalculator:
    def __init__(self, db: Database, datamap: DataMap, trail: AuditTrail) -> None:
        self.db = db
        self.datamap = datamap
        self.trail = trail
        # field name -> highest classification it has in any collection (events of a
        # subject's records list fields of several collections together)
        self._any: dict[str, Classification] = {}
        for spec in datamap.collections.values():
            for name, f in spec.fields.items():
                if name not in self._any or f.classification.rank > self._any[name].rank:
                    self._any[name] = f.classification

    def compute(self, req: ScopeRequest) -> ScopeResult:
        unknown = [c for c in req.collections or () if c not in self.datamap.collections]
        if unknown:
            raise NotFound(f"unknown collection {unknown[0]}", code="collection_not_found")
        # Everything up to now is sequenced and signed: the result names its checkpoint,
        # so anyone can recompute it from the same prefix of the trail.
        self.trail.sequence(force_checkpoint=True)
        size = self.trail.latest_checkpoint().size
        subjects = self._from_events(req, size) if req.principals else self._at_rest(req)
        return ScopeResult(size, subjects, self._jurisdictions(list(subjects)))

    def _classify(self, collection: str | None, name: str) -> Classification | None:
        spec = self.datamap.collections.get(collection or "")
        if spec is not None and name in spec.fields:
            return spec.fields[name].classification
        return self._any.get(name)

    def _from_events(self, req: ScopeRequest, size: int) -> dict[str, Exposure]:
        out: dict[str, Exposure] = defaultdict(Exposure)
        # Records of events naming several subjects, placed once their rows are read (local:
        # one calculator serves concurrent requests).
        unplaced: set[str] = set()
        wanted = set(req.collections) if req.collections else None
        after = -1
        with self.db.read() as conn:
            while True:
                rows = conn.execute(
                    sa.select(audit_events.c.leaf_index, audit_events.c.event)
                    .where(audit_events.c.actor.in_([i for _, i in req.principals]),
                           audit_events.c.action.in_(sorted(TOUCHES)),
                           audit_events.c.at >= req.since, audit_events.c.at < req.until,
                           audit_events.c.leaf_index > after,
                           audit_events.c.leaf_index < size)
                    .order_by(audit_events.c.leaf_index).limit(5000)).all()
                if not rows:
                    break
                after = rows[-1].leaf_index
                for r in rows:
                    if r.event is not None:
                        self._event(json.loads(r.event), wanted, out, unplaced)
            ordered = sorted(unplaced)
            for i in range(0, len(ordered), _CHUNK):
                for rec in conn.execute(sa.select(records.c.id, records.c.subject_id).where(
                        records.c.id.in_(ordered[i:i + _CHUNK]))):
                    if rec.subject_id in out:
                        out[rec.subject_id].records.add(rec.id)
        return dict(out)

    def _event(self, ev: dict[str, Any], wanted: set[str] | None,
               out: dict[str, Exposure], unplaced: set[str]) -> None:
        if ev["decision"] == "deny" or not ev["subject_ids"]:
            return
        collection = ev.get("collection")
        # An event without a collection (a subject's records) counts: over-notifying is the
        # safe side of a breach.
        if wanted is not None and collection is not None and collection not in wanted:
            return
        masked = set(ev["details"].get("masked_fields") or ())
        # Events from before masked fields were recorded count every field as clear.
        clear = {f for f in ev["fields"] if f not in masked}
        classes = {c for c in (self._classify(collection, f) for f in clear)
                   if c is not None and c.rank > Classification.INTERNAL.rank}
        exposure = DECRYPTED if classes else MASKED
        for sid in ev["subject_ids"]:
            e = out[sid]
            before = e.exposure
            if e.event_id is None or _RANK[exposure] > _RANK[before]:
                e.event_id = ev["id"]
            e.raise_to(exposure)
            e.classifications |= {str(c) for c in classes}
        if len(ev["subject_ids"]) == 1:
            out[ev["subject_ids"][0]].records.update(ev["record_ids"])
        else:  # records of several subjects: each to its own, once the rows are looked up
            unplaced.update(ev["record_ids"])

    def _at_rest(self, req: ScopeRequest) -> dict[str, Exposure]:
        """A lost copy: every stored record of the collections, as ciphertext (or in clear
        if the keys went with it). Field names only: nothing is decrypted."""
        out: dict[str, Exposure] = defaultdict(Exposure)
        q = sa.select(records.c.id, records.c.subject_id, records.c.collection,
                      records.c.sealed)
        if req.collections:
            q = q.where(records.c.collection.in_(req.collections))
        exposure = DECRYPTED if req.keys_compromised else CIPHERTEXT_ONLY
        with self.db.read() as conn:
            for r in conn.execute(q):
                e = out[r.subject_id]
                e.raise_to(exposure)
                e.records.add(r.id)
                # The classes held, even as ciphertext: the safe harbours are decided on them.
                for name in json.loads(r.sealed):
                    c = self._classify(r.collection, name)
                    if c is not None and c.rank > Classification.INTERNAL.rank:
                        e.classifications.add(str(c))
        return dict(out)

    def _jurisdictions(self, subject_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.db.read() as conn:
            for i in range(0, len(subject_ids), _CHUNK):
                part = subject_ids[i:i + _CHUNK]
                for r in conn.execute(sa.select(records.c.subject_id, records.c.clear).where(
                        records.c.subject_id.in_(part), records.c.collection == "persons")):
                    clear = json.loads(r.clear)
                    out[r.subject_id] = jurisdiction(clear.get("country"), clear.get("state"))
        return out


def jurisdiction(country: Any, state: Any) -> str:
    """``US-NY`` for a US state, the country code elsewhere, ``unknown`` without either."""
    if isinstance(country, str) and country and country != "US":
        return country
    if isinstance(state, str) and state:
        return f"US-{state}"
    return "US" if country == "US" else "unknown"
