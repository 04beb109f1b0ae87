"""Separation of duties for access to customer data (issue 10, item 4).

Through the API, creating or changing a user or an API key so that it holds a *data role* (a
role with any grant in the policy pack) or ``privacy:manage`` is a proposal: nothing takes
effect until a different person holding ``approvals:decide`` approves it. The proposer can
never approve (nor can the user whose access changes), and API keys never decide: approval is
a person's act. The operator's CLI on the server's own host (which holds the keyring anyway)
applies at once and decides pending proposals; its audit events name the operator.

Both steps leave audit events naming the acting principal (``approval.propose``,
``approval.approve`` / ``approval.reject``, then the change itself with its approval id).
A key proposed with a data role is created at once but does not authenticate until approved
(its secret is shown to the proposer once, at the proposal); a proposed user does not exist
until approved, and its enrolment code goes to the user by the operator (``fiduciary users
enrolment-code``), never to the proposer or the approver.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.apikeys import ApiKey, ApiKeyService
from fiduciary.access.policy import ACTIONS, PolicyEngine
from fiduciary.access.users import User, UserService
from fiduciary.audit.events import AuditLog, audit_actor, request_context
from fiduciary.clock import Clock, iso
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    Reason,
    WorkflowConflict,
)
from fiduciary.principal import ActorKind, Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import api_keys, approvals

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
USER_CREATE, USER_SET_ROLES, USER_RE_ENROL, APIKEY_CREATE = (
    "user.create", "user.set_roles", "user.re_enrol", "apikey.create")
#: Permissions that reach customer data as much as a grant does — or that approve such
#: access (an administrator must not make itself an approver), or that decide what becomes
#: of misuse findings and breaches (an administrator must not make itself the one who
#: dismisses alerts or runs incidents), or that read whistleblowers' reports (an
#: administrator must not make itself the reader of the speak-up channel).
SENSITIVE_PERMISSIONS = frozenset({Permission.PRIVACY_MANAGE, Permission.APPROVALS_DECIDE,
                                   Permission.ALERTS_MANAGE, Permission.INCIDENTS_MANAGE,
                                   Permission.SPEAKUP_MANAGE})


@dataclass(frozen=True)
class Approval:
    id: str
    kind: str
    target: str
    payload: dict[str, Any]
    status: str
    proposed_by: dict[str, str]
    proposed_at: datetime
    decided_by: dict[str, str] | None
    decided_at: datetime | None
    note: str | None

    @classmethod
    def from_row(cls, r: Any) -> Approval:
        decided = ({"kind": r.decided_by_kind, "id": r.decided_by_id,
                    "name": r.decided_by_name} if r.decided_by_id else None)
        return cls(r.id, r.kind, r.target, json.loads(r.payload), r.status,
                   {"kind": r.proposed_by_kind, "id": r.proposed_by_id,
                    "name": r.proposed_by_name}, r.proposed_at, decided, r.decided_at, r.note)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.target,
                "payload": self.payload, "status": self.status,
                "proposed_by": self.proposed_by, "proposed_at": iso(self.proposed_at),
                "decided_by": self.decided_by,
                "decided_at": iso(self.decided_at) if self.decided_at else None,
                "note": self.note}


@dataclass(frozen=True)
class Outcome:
    """What a request to change access came to: applied at once (``approval`` None), or a
    proposal waiting for approval."""

    approval: Approval | None = None
    user: User | None = None
    key: ApiKey | None = None
    #: A new key's secret, shown once (also for a key that waits for approval).
    token: str | None = None


def _who(principal: Principal) -> dict[str, str]:
    """Kind, id and name of a principal as approvals record it (the CLI: its operator)."""
    if principal.is_system:
        operator = request_context.get().operator or "system"
        return {"kind": ActorKind.OPERATOR, "id": f"cli:{operator}", "name": operator}
    return {"kind": principal.kind, "id": principal.id, "name": principal.username}


class ApprovalService:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, policy: PolicyEngine,
                 users: UserService, api_keys: ApiKeyService) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.policy = policy
        self.users = users
        self.api_keys = api_keys

    # -- what needs approval -------------------------------------------------------------------
    def sensitive(self, roles: list[str] | tuple[str, ...]) -> list[str]:
        """The roles that reach customer data: any grant in the pack, or ``privacy:manage``."""
        out = []
        for r in roles:
            probe = Principal(id="-", kind=ActorKind.USER, username="-", roles=(r,))
            if (self.policy.has_any_grant(probe, ACTIONS)
                    or self.policy.permissions((r,)) & SENSITIVE_PERMISSIONS):
                out.append(r)
        return out

    # -- requests through the API --------------------------------------------------------------
    def request_user(self, by: Principal, username: str, roles: list[str],
                     regions: list[str] | None = None) -> Outcome:
        """Create a user: at once when no role reaches customer data (its enrolment code is
        not shown to the caller), else a proposal."""
        regions = list(regions or [])
        sensitive = self.sensitive(roles)
        if by.is_system or not sensitive:
            made = self.users.create(username, roles, regions, by=by, issue_code=by.is_system,
                                     authority={"authority": "operator" if by.is_system
                                                else "no_data_role"})
            return Outcome(user=made.user)
        with self.db.write() as conn:
            self.users.check_new(conn, username, roles)
            self._no_pending(conn, USER_CREATE, username)
            return Outcome(approval=self._propose(
                conn, by, USER_CREATE, username, {"roles": roles, "regions": regions},
                sensitive))

    def request_roles(self, by: Principal, username: str, roles: list[str]) -> Outcome:
        """Replace a user's roles: at once unless a role that reaches customer data is added."""
        self.users.check_roles(roles)
        current = self.users.get(username)
        added = self.sensitive([r for r in roles if r not in current.roles])
        if by.is_system or not added:
            return Outcome(user=self.users.set_roles(
                username, roles, by=by,
                authority={"authority": "operator" if by.is_system else "no_data_role"}))
        with self.db.write() as conn:
            self._no_pending(conn, USER_SET_ROLES, username)
            return Outcome(approval=self._propose(
                conn, by, USER_SET_ROLES, username,
                {"roles": roles, "previous": list(current.roles)}, added))

    def request_re_enrol(self, by: Principal, username: str) -> Outcome:
        """Withdraw a user's password and TOTP so they enrol again: always approved first
        (whoever could re-enrol a user at will could take over their account)."""
        user = self.users.get(username)
        if by.is_system:
            with self.db.write() as conn:
                return Outcome(user=self.users.re_enrol_in(conn, username, by))
        with self.db.write() as conn:
            self._no_pending(conn, USER_RE_ENROL, username)
            return Outcome(approval=self._propose(conn, by, USER_RE_ENROL, username,
                                                  {"roles": list(user.roles)}, []))

    def request_api_key(self, by: Principal, name: str, role: str, days: int | None = None,
                        scopes: list[str] | None = None) -> Outcome:
        """Create an API key: in force at once unless its role reaches customer data; then
        it exists but does not authenticate until approved."""
        self.api_keys.check(name, role, days, scopes)
        sensitive = self.sensitive([role])
        if by.is_system or not sensitive:
            key, token = self.api_keys.create(
                name, role, days, scopes, by=by,
                authority={"authority": "operator" if by.is_system else "no_data_role"})
            return Outcome(key=key, token=token)
        approval_id = str(uuid.uuid4())
        with self.db.write() as conn:
            key, token = self.api_keys.create_in(
                conn, name, role, days, scopes, by=by, approval_id=approval_id,
                authority={"authority": "approval", "approval_id": approval_id,
                           "state": "pending_approval"})
            approval = self._propose(conn, by, APIKEY_CREATE, key.id,
                                     {"name": name, "role": role, "scopes": scopes,
                                      "days": days}, sensitive, approval_id)
        return Outcome(approval=approval, key=key, token=token)

    def _no_pending(self, conn: Connection, kind: str, target: str) -> None:
        if conn.execute(sa.select(approvals.c.id).where(
                approvals.c.kind == kind, approvals.c.target == target,
                approvals.c.status == PENDING)).first() is not None:
            raise InvalidInput("a proposal for this change is already pending",
                               [FieldProblem("username", "proposal pending")])

    def _propose(self, conn: Connection, by: Principal, kind: str, target: str,
                 payload: dict[str, Any], sensitive: list[str],
                 approval_id: str | None = None) -> Approval:
        who = _who(by)
        new_id = approval_id or str(uuid.uuid4())
        row: dict[str, Any] = {"id": new_id, "kind": kind, "target": target,
               "payload": json.dumps(payload, sort_keys=True), "status": PENDING,
               "proposed_by_kind": who["kind"], "proposed_by_id": who["id"],
               "proposed_by_name": who["name"], "proposed_at": self.clock.now()}
        conn.execute(approvals.insert(), [row])
        self.audit.append(conn, self.audit.event(
            audit_actor(by), "approval.propose", reason=Reason.APPROVAL_REQUIRED,
            details={"approval_id": new_id, "kind": kind, "target": target,
                     "data_roles": sensitive, **payload}))
        return self._get(conn, new_id)

    # -- reading -------------------------------------------------------------------------------
    def list(self, status: str | None = None) -> list[Approval]:
        if status is not None and status not in STATUSES:
            raise InvalidInput("unknown status", [FieldProblem("status", ", ".join(STATUSES))])
        q = sa.select(approvals).order_by(approvals.c.proposed_at, approvals.c.id)
        if status is not None:
            q = q.where(approvals.c.status == status)
        with self.db.read() as conn:
            return [Approval.from_row(r) for r in conn.execute(q)]

    def get(self, approval_id: str) -> Approval:
        with self.db.read() as conn:
            return self._get(conn, approval_id)

    @staticmethod
    def _get(conn: Connection, approval_id: str) -> Approval:
        row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
        if row is None:
            raise NotFound("approval not found", code="approval_not_found")
        return Approval.from_row(row)

    # -- deciding ------------------------------------------------------------------------------
    def _check_decider(self, by: Principal, approval: Approval) -> None:
        if by.is_system:
            return  # the operator on the host
        if not by.is_person:
            raise Forbidden("approvals are decided by a person: a staff user, or the "
                            "operator's CLI", reason=Reason.SEPARATION_OF_DUTIES)
        require_permission(by, Permission.APPROVALS_DECIDE, scope=None)
        if approval.proposed_by["id"] == by.id:
            raise Forbidden("a proposal is approved by someone other than its proposer",
                            reason=Reason.SEPARATION_OF_DUTIES)
        if approval.kind.startswith("user.") and approval.target == by.username:
            raise Forbidden("nobody decides a change to their own access",
                            reason=Reason.SEPARATION_OF_DUTIES)

    def _decide(self, by: Principal, approval_id: str, status: str,
                note: str | None) -> Approval:
        if note is not None and (not isinstance(note, str) or len(note) > 2000):
            raise InvalidInput("note too long", [FieldProblem("note", "at most 2000 characters")])
        approval = self.get(approval_id)
        self._check_decider(by, approval)
        who = _who(by)
        with self.db.write() as conn:
            done = conn.execute(approvals.update().where(
                approvals.c.id == approval_id, approvals.c.status == PENDING).values(
                status=status, decided_by_kind=who["kind"], decided_by_id=who["id"],
                decided_by_name=who["name"], decided_at=self.clock.now(), note=note))
            if done.rowcount != 1:
                raise WorkflowConflict("this proposal has been decided already",
                                       reason=Reason.REQUEST_CLOSED)
            self.audit.append(conn, self.audit.event(
                audit_actor(by), f"approval.{'approve' if status == APPROVED else 'reject'}",
                details={"approval_id": approval_id, "kind": approval.kind,
                         "target": approval.target, "proposed_by": approval.proposed_by,
                         "note_chars": len(note or "")}))
            if status == APPROVED:
                self._apply(conn, by, approval)
            elif approval.kind == APIKEY_CREATE:
                conn.execute(api_keys.update().where(
                    api_keys.c.id == approval.target, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=self.clock.now()))
            return self._get(conn, approval_id)

    def _apply(self, conn: Connection, by: Principal, approval: Approval) -> None:
        p = approval.payload
        authority = {"authority": "approval", "approval_id": approval.id,
                     "proposed_by": approval.proposed_by}
        if approval.kind == USER_CREATE:
            # No code for the approver either: the operator issues it to the user.
            self.users.create_in(conn, approval.target, list(p["roles"]), list(p["regions"]),
                                 by=by, issue_code=False, authority=authority)
        elif approval.kind == USER_SET_ROLES:
            self.users.set_roles_in(conn, approval.target, list(p["roles"]), by, authority)
        elif approval.kind == USER_RE_ENROL:
            self.users.re_enrol_in(conn, approval.target, by, authority)
        elif (approval.kind == APIKEY_CREATE
              and not self.api_keys.activate_in(conn, approval.target, approval.id)):
            raise WorkflowConflict("the proposed key was revoked",
                                       reason=Reason.REQUEST_CLOSED)

    def approve(self, by: Principal, approval_id: str, note: str | None = None) -> Approval:
        return self._decide(by, approval_id, APPROVED, note)

    def reject(self, by: Principal, approval_id: str, note: str | None = None) -> Approval:
        return self._decide(by, approval_id, REJECTED, note)
