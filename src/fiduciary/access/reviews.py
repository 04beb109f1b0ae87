"""Access reviews (NYDFS 500.7(a)(4)): every account's effective entitlements and state, the
accounts to look at, and the reviewer's recorded decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.apikeys import ApiKeyService
from fiduciary.access.policy import PolicyEngine
from fiduciary.access.users import UserService
from fiduciary.clock import Clock, iso
from fiduciary.errors import FieldProblem, InvalidInput, NotFound
from fiduciary.principal import Principal
from fiduciary.storage import Database
from fiduciary.storage.schema import access_reviews

UNUSED_DAYS = 90
REVIEW_DAYS = 365


def certification_overdue(last_certified: datetime | None, now: datetime) -> bool:
    """NYDFS 500.7(a)(4): an active account is certified at least every 365 days (one never
    certified is overdue)."""
    return last_certified is None or last_certified < now - timedelta(days=REVIEW_DAYS)


@dataclass(frozen=True)
class ReviewDecision:
    account_kind: str
    account_id: str
    account_name: str
    decision: str
    reviewer: str
    note: str | None
    at: datetime


class AccessReviewService:
    def __init__(self, db: Database, clock: Clock, policy: PolicyEngine, users: UserService,
                 api_keys: ApiKeyService) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.users = users
        self.api_keys = api_keys

    def entitlements(self, roles: tuple[str, ...],
                     scopes: tuple[str, ...] | None = None) -> dict[str, Any]:
        """role -> collection -> {actions, purposes, fields}, merged over the role's grants."""
        out: dict[str, Any] = {}
        dm = self.policy.datamap
        for r in roles:
            role = self.policy.pack.roles.get(r)
            if role is None:
                continue
            per: dict[str, dict[str, set[str]]] = {}
            for g in role.grants:
                actions = set(g.actions) & set(scopes) if scopes else set(g.actions)
                for c in sorted(g.collections):
                    spec = dm.collections[c]
                    fields = set(spec.fields) if g.fields is None else g.fields & set(spec.fields)
                    purposes = ({p for f in fields for p in spec.fields[f].purposes}
                                if g.purposes is None else set(g.purposes))
                    e = per.setdefault(c, {"actions": set(), "purposes": set(), "fields": set()})
                    e["actions"] |= actions
                    e["purposes"] |= purposes
                    e["fields"] |= fields
            out[r] = {"permissions": sorted(role.permissions),
                      "collections": {c: {k: sorted(v) for k, v in e.items()}
                                      for c, e in sorted(per.items())}}
        return out

    def _last_decisions(self) -> dict[str, ReviewDecision]:
        last: dict[str, ReviewDecision] = {}
        for d in self.history():
            last[d.account_id] = d
        return last

    def review(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        last = self._last_decisions()
        rows: list[dict[str, Any]] = []
        for u in self.users.all():
            training = {t.course: t.expires_at for t in self.users.training(u.id)}
            required = self.policy.pack.settings.required_training
            current = all(c in training and training[c] > now.date() for c in required)
            rows.append(self._row("user", u.id, u.username, u.roles, None, u.created_at,
                                  u.last_login_at, u.mfa_enrolled_at is not None,
                                  "disabled" if u.disabled_at else "active",
                                  {"current": current,
                                   "courses": {c: e.isoformat() for c, e in training.items()}},
                                  last.get(u.id), now))
        for k in self.api_keys.all():
            rows.append(self._row("api_key", k.id, k.name, (k.role,), k.scopes, k.created_at,
                                  k.last_used_at, None, k.state(now), None, last.get(k.id),
                                  now))
        return rows

    def _row(self, kind: str, account_id: str, name: str, roles: tuple[str, ...],
             scopes: tuple[str, ...] | None, created: datetime, last_used: datetime | None,
             mfa: bool | None, state: str, training: dict[str, Any] | None,
             decision: ReviewDecision | None, now: datetime) -> dict[str, Any]:
        flags = []
        if state == "active":
            if (last_used or created) < now - timedelta(days=UNUSED_DAYS):
                flags.append(f"unused_{UNUSED_DAYS}d")
            reviewed = decision.at if decision and decision.decision == "certified" else None
            if certification_overdue(reviewed, now):
                flags.append(f"not_reviewed_{REVIEW_DAYS}d")
            if mfa is False:
                flags.append("no_mfa")
            if training is not None and not training["current"]:
                flags.append("training_expired")
        return {"kind": kind, "id": account_id, "name": name, "state": state,
                "roles": list(roles), "scopes": list(scopes) if scopes else None,
                "entitlements": self.entitlements(roles, scopes),
                "last_used_at": iso(last_used) if last_used else None,
                "mfa_enrolled": mfa, "training": training,
                "last_review": {"decision": decision.decision, "reviewer": decision.reviewer,
                                "at": iso(decision.at)} if decision else None,
                "flags": flags}

    def _account(self, account: str) -> tuple[str, str, str]:
        for u in self.users.all():
            if u.username == account:
                return "user", u.id, u.username
        for k in self.api_keys.all():
            if k.id == account:
                return "api_key", k.id, k.name
        raise NotFound(f"no user or API key {account!r}", code="account_not_found")

    def decide(self, account: str, decision: str, reviewer: str,
               note: str | None = None) -> ReviewDecision:
        """Record ``certified`` or ``revoked``; revoking also disables the user or the key."""
        if decision not in ("certified", "revoked"):
            raise InvalidInput("unknown decision", [FieldProblem("decision",
                                                                 "certified or revoked")])
        if not reviewer.strip():
            raise InvalidInput("a reviewer is required", [FieldProblem("reviewer", "required")])
        kind, account_id, name = self._account(account)
        if decision == "revoked":
            if kind == "user":
                self.users.set_disabled(name, True)
            else:
                self.api_keys.revoke(account_id)
        with self.db.write() as conn:
            return self.record_in(conn, kind, account_id, name, decision, reviewer, note)

    def record_in(self, conn: Connection, kind: str, account_id: str, name: str,
                  decision: str, reviewer: str, note: str | None = None,
                  by: Principal | None = None, **details: Any) -> ReviewDecision:
        """Record a decision on an account (``certified`` restarts its 365 days), audited
        as ``access.review``; ``by`` None: the operator."""
        d = ReviewDecision(kind, account_id, name, decision, reviewer, note, self.clock.now())
        conn.execute(access_reviews.insert(), [{
            "account_kind": d.account_kind, "account_id": d.account_id,
            "account_name": d.account_name, "decision": d.decision, "reviewer": d.reviewer,
            "note": d.note, "at": d.at}])
        audit = self.users.audit
        audit.append(conn, audit.event(by, "access.review", details={
            "account_kind": kind, "account_id": account_id, "account": name,
            "decision": decision, "reviewer": reviewer, **details}))
        return d

    def last_certified(self) -> dict[str, datetime]:
        """account id -> when it was last certified."""
        with self.db.read() as conn:
            rows = conn.execute(sa.select(access_reviews.c.account_id,
                                          sa.func.max(access_reviews.c.at))
                                .where(access_reviews.c.decision == "certified")
                                .group_by(access_reviews.c.account_id)).all()
        return {r[0]: r[1] for r in rows}

    def history(self) -> list[ReviewDecision]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(access_reviews).order_by(access_reviews.c.at,
                                                                   access_reviews.c.id))
            return [ReviewDecision(r.account_kind, r.account_id, r.account_name, r.decision,
                                   r.reviewer, r.note, r.at) for r in rows]
