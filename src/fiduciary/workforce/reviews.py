"""Access review campaigns (NYDFS 500.7(a)(4): at least annual review of access privileges;
HIPAA 164.308(a)(4)(ii)(C)): every entitlement goes to a person who keeps or revokes it.

::

    start(scope all | role:NAME, due)          snapshot, one item per entitlement:
        active staff user ─┬─ each role                     (revoke: role removed; the last
                           │                                  role: the account is disabled)
                           ├─ each region it serves          (revoke: region removed)
                           ├─ each record assigned to it     (revoke: assignment ended)
                           └─ each API key it holds          (revoke: key revoked)
        active API key nobody holds ── the key               (revoke: key revoked)
        reviewer: the account's active manager; else the pool (any ``security_analyst``);
        a manager disabled later (a leaver) hands their undecided items to the pool
    decide(item, keep | revoke, note)           note required to revoke
        ├─ never an item about one's own access          403 separation_of_duties
        ├─ only an item assigned to oneself               403 field_not_permitted
        ├─ once                                           409 already_decided
        └─ a revocation takes effect at once, through the user, key and record services
    all of an account's items decided ──> the account is certified (``access_reviews``)
    an active account not certified within 365 days is flagged (``uncertified``)

The CLI is the host's operator: it may decide any item (recorded as the operator).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.apikeys import ApiKey, ApiKeyService
from fiduciary.access.policy import PolicyEngine
from fiduciary.access.reviews import AccessReviewService, certification_overdue
from fiduciary.access.users import User, UserService
from fiduciary.audit.events import AuditLog, audit_actor, request_context
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.datamap.values import ValueRejected, validate
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    Reason,
    WorkflowConflict,
)
from fiduciary.ids import is_id
from fiduciary.monitoring.alerts import Notes, free_text
from fiduciary.principal import SYSTEM, Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import review_campaigns, review_items
from fiduciary.vault import VaultService, store

#: Who decides an item whose account has no active manager (any holder, never about
#: themselves).
POOL_ROLE = "security_analyst"
NOTE_LIMIT = 2000
#: Records one account may be assigned per (collection, field) that a campaign lists.
MAX_ASSIGNMENTS = 10_000
#: ``record.F == principal.username``: the grant reaches records assigned to the principal.
_ASSIGNED = re.compile(r"^\s*record\.([a-z_][a-z0-9_]*)\s*==\s*principal\.username\s*$")


class ItemKind(StrEnum):
    ROLE = "role"
    REGION = "region"
    ASSIGNMENT = "assignment"
    API_KEY = "api_key"


class Decision(StrEnum):
    KEEP = "keep"
    REVOKE = "revoke"


@dataclass(frozen=True)
class Campaign:
    id: str
    scope: str
    status: str
    created_by: str
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    total: int
    decided: int
    overdue: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope, "status": self.status,
                "created_by": self.created_by, "created_at": iso(self.created_at),
                "due_at": iso(self.due_at), "completed_at": iso_or_none(self.completed_at),
                "items": self.total, "decided": self.decided, "overdue": self.overdue,
                "completion": round(100 * self.decided / self.total, 1) if self.total else 100.0}


@dataclass(frozen=True)
class ReviewItem:
    id: str
    campaign_id: str
    account_kind: str
    account_id: str
    account_name: str
    kind: str
    entitlement: str
    context: dict[str, Any]
    reviewer_id: str | None
    reviewer_name: str | None
    reviewer_role: str | None
    due_at: datetime
    overdue: bool
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    note: str | None
    effect: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "campaign_id": self.campaign_id,
                "account": {"kind": self.account_kind, "id": self.account_id,
                            "name": self.account_name},
                "kind": self.kind, "entitlement": self.entitlement, "context": self.context,
                "reviewer": {"id": self.reviewer_id, "name": self.reviewer_name,
                             "role": self.reviewer_role},
                "due_at": iso(self.due_at), "overdue": self.overdue,
                "decision": self.decision, "decided_by": self.decided_by,
                "decided_at": iso_or_none(self.decided_at), "note": self.note,
                "effect": self.effect}


@dataclass(frozen=True)
class Uncertified:
    """An active account not certified within 365 days."""

    kind: str
    id: str
    name: str
    last_certified_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name,
                "last_certified_at": iso_or_none(self.last_certified_at)}


@dataclass(frozen=True)
class Overview:
    """What a caller sees: campaigns, the items they may decide (or all: ``reviews:read``),
    and (``reviews:read``) the accounts not certified within 365 days."""

    campaigns: list[Campaign]
    items: list[ReviewItem]
    uncertified: list[Uncertified] | None


@dataclass(frozen=True)
class _Reviewers:
    names: dict[str, str]
    #: Disabled users: their items go to the pool.
    inactive: set[str]


@dataclass(frozen=True)
class _Entitlement:
    kind: ItemKind
    entitlement: str
    context: dict[str, Any]


class ReviewCampaigns:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, users: UserService,
                 api_keys: ApiKeyService, reviews: AccessReviewService, policy: PolicyEngine,
                 vault: VaultService, notes: Notes, due_days: int = 30) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.users = users
        self.api_keys = api_keys
        self.reviews = reviews
        self.policy = policy
        self.vault = vault
        self.notes = notes
        self.due_days = due_days

    # -- opening a campaign ------------------------------------------------------------------
    def start(self, by: Principal, scope: str = "all", due: date | None = None) -> Campaign:
        """Open a campaign over the active accounts in ``scope`` (``all`` or ``role:NAME``),
        due at the end of ``due`` (default: ``due_days`` from now)."""
        require_permission(by, Permission.REVIEWS_MANAGE, scope=None)
        now = self.clock.now()
        problems = []
        role = scope.removeprefix("role:") if scope.startswith("role:") else None
        if scope != "all" and role not in self.policy.pack.roles:
            problems.append(FieldProblem("scope", "all, or role:NAME with a known role"))
        due_at = (datetime.combine(due, time(23, 59, 59), UTC) if due is not None
                  else now + timedelta(days=self.due_days))
        if due_at <= now:
            problems.append(FieldProblem("due", "a date after today"))
        if problems:
            raise InvalidInput.from_problems(problems, "review campaign")
        every = self.users.all()
        people = [u for u in every
                  if u.disabled_at is None and (role is None or role in u.roles)]
        by_id = {u.id: u for u in every}
        # A disabled holder's key is reviewed too: it works again when they are enabled.
        keys = [k for k in self.api_keys.all()
                if k.state(now) in ("active", "pending_approval", "holder_disabled")]
        held: dict[str, list[ApiKey]] = {}
        for k in keys:
            if k.owner_id is not None:
                held.setdefault(k.owner_id, []).append(k)
        rows: list[dict[str, Any]] = []
        campaign_id = str(uuid.uuid4())
        with self.db.read() as conn:
            for u in people:
                reviewer = self._manager(u, by_id)
                for e in self._entitlements(conn, u, held.get(u.id, []), now):
                    rows.append(self._item(campaign_id, "user", u.id, u.username, e,
                                           reviewer))
        for k in keys:
            if k.owner_id is None and (role is None or k.role == role):
                rows.append(self._item(campaign_id, "api_key", k.id, k.name, _Entitlement(
                    ItemKind.API_KEY, k.id, _key_context(k)), None))
        if not rows:
            raise InvalidInput.from_problems(
                [FieldProblem("scope", "no active account in scope")], "review campaign")
        created_by = _name(by)
        with self.db.write() as conn:
            conn.execute(review_campaigns.insert(), [{
                "id": campaign_id, "scope": scope, "status": "open", "created_by": created_by,
                "created_at": now, "due_at": due_at}])
            conn.execute(review_items.insert(), rows)
            self.audit.append(conn, self.audit.event(
                audit_actor(by), "review.campaign_start", details={
                    "campaign_id": campaign_id, "scope": scope, "due_at": iso(due_at),
                    "items": len(rows), "accounts": len({r["account_id"] for r in rows})}))
        return self.campaign(campaign_id)

    @staticmethod
    def _manager(user: User, by_id: dict[str, User]) -> User | None:
        """The account's reviewer: its manager, if active and not the account itself."""
        manager = by_id.get(user.manager_id or "")
        if manager is None or manager.disabled_at is not None or manager.id == user.id:
            return None
        return manager

    @staticmethod
    def _item(campaign_id: str, account_kind: str, account_id: str, account_name: str,
              e: _Entitlement, reviewer: User | None) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "campaign_id": campaign_id,
                "account_kind": account_kind, "account_id": account_id,
                "account_name": account_name, "kind": e.kind, "entitlement": e.entitlement,
                "context": json.dumps(e.context, sort_keys=True),
                "reviewer_id": reviewer.id if reviewer else None,
                "reviewer_role": None if reviewer else POOL_ROLE}

    def _entitlements(self, conn: Connection, u: User, keys: list[ApiKey],
                      now: datetime) -> list[_Entitlement]:
        training = {t.course: t.expires_at for t in self.users.training(u.id)}
        required = self.policy.pack.settings.required_training
        account = {"last_login_at": iso_or_none(u.last_login_at),
                   "created_at": iso(u.created_at),
                   "mfa_enrolled": u.mfa_enrolled_at is not None,
                   "training": {"current": all(c in training and training[c] > now.date()
                                               for c in required),
                                "courses": {c: e.isoformat() for c, e in training.items()}}}
        out = [_Entitlement(ItemKind.ROLE, r, {**account, "role": r}) for r in u.roles]
        out += [_Entitlement(ItemKind.REGION, r, {**account, "region": r}) for r in u.regions]
        for collection, field in self._assignment_fields(u.roles):
            for record_id in self._assigned(conn, collection, field, u.username):
                out.append(_Entitlement(ItemKind.ASSIGNMENT, f"{collection}/{record_id}", {
                    **account, "collection": collection, "field": field,
                    "record_id": record_id}))
        out += [_Entitlement(ItemKind.API_KEY, k.id, {**account, **_key_context(k)})
                for k in keys]
        return out

    def _assignment_fields(self, roles: Iterable[str]) -> list[tuple[str, str]]:
        """(collection, field) pairs the roles' grants reach by ``record.F ==
        principal.username``: the records assigned to the user (claims, quotes)."""
        found: set[tuple[str, str]] = set()
        for r in roles:
            role = self.policy.pack.roles.get(r)
            for g in role.grants if role else ():
                for text in g.condition_text:
                    m = _ASSIGNED.match(text)
                    if m:
                        found |= {(c, m.group(1)) for c in g.collections}
        return sorted(found)

    def _assigned(self, conn: Connection, collection: str, field: str,
                  username: str) -> list[str]:
        spec = self.vault.collection(collection)
        f = spec.fields.get(field)
        if f is None or not f.searchable:
            return []  # found through the blind index only: the pack's fields are searchable
        try:
            digest = self.vault.codec.digest(spec, field, validate(f, username))
        except ValueRejected:  # no value of the field can be this username: nothing assigned
            return []
        return [r.id for r in store.search_rows(conn, collection, [(field, digest)],
                                                MAX_ASSIGNMENTS)]

    # -- deciding ------------------------------------------------------------------------------
    def decide(self, by: Principal, campaign_id: str, item_id: str, decision: str,
               note: str | None = None) -> ReviewItem:
        """Keep or revoke one item (a note is required to revoke); a revocation takes
        effect at once."""
        if decision not in tuple(Decision):
            raise InvalidInput.from_problems([FieldProblem("decision", "keep or revoke")],
                                             "decision")
        if decision == Decision.KEEP and not (note or "").strip():
            note = None  # a blank note on a keep is no note
        text = free_text("note", note, required=decision == Decision.REVOKE, limit=NOTE_LIMIT)
        every = self.users.all()
        self._follow_managers(every)
        item = self._row(campaign_id, item_id, every)
        self._may_decide(by, item)
        now = self.clock.now()
        with self.db.write() as conn:
            claimed = conn.execute(review_items.update().where(
                review_items.c.id == item.id, review_items.c.decision.is_(None)).values(
                decision=decision, decided_by=_name(by), decided_at=now,
                note_sealed=self.notes.seal(text, "review", item.id) if text else None))
            if claimed.rowcount != 1:
                raise WorkflowConflict(f"review item {item_id} is already decided",
                                       reason="already_decided")
        effect = None
        if decision == Decision.REVOKE:
            try:
                effect = self._revoke(by, item)
            except Exception:
                with self.db.write() as conn:  # nothing revoked: the item waits again
                    conn.execute(review_items.update().where(review_items.c.id == item.id)
                                 .values(decision=None, decided_by=None, decided_at=None,
                                         note_sealed=None))
                raise
        with self.db.write() as conn:
            conn.execute(review_items.update().where(review_items.c.id == item.id)
                         .values(effect=effect))
            details: dict[str, Any] = {
                "campaign_id": item.campaign_id, "item_id": item.id,
                "account_kind": item.account_kind, "account_id": item.account_id,
                "account": item.account_name, "kind": item.kind,
                "entitlement": item.entitlement, "decision": decision, "effect": effect}
            if text:
                details["note_digest"] = self.notes.digest(text)
            self.audit.append(conn, self.audit.event(
                audit_actor(by), "review.decide",
                decision="allow" if decision == Decision.KEEP else "deny", details=details))
            self._settle(conn, by, item)
        return self._row(campaign_id, item_id)

    def _may_decide(self, by: Principal, item: ReviewItem) -> None:
        if by.is_system:
            return  # the host's operator (the CLI)
        if not by.is_person:
            raise Forbidden("access reviews are decided by people",
                            reason=Reason.FIELD_NOT_PERMITTED)
        if item.account_id == by.id:
            raise Forbidden("an item about your own access is decided by someone else",
                            reason=Reason.SEPARATION_OF_DUTIES)
        mine = item.reviewer_id == by.id or (item.reviewer_role is not None
                                             and item.reviewer_role in by.roles)
        if not mine:
            raise Forbidden("this review item is not assigned to you",
                            reason=Reason.FIELD_NOT_PERMITTED)

    def _revoke(self, by: Principal, item: ReviewItem) -> str:
        """End the entitlement through the service that owns it (audited there)."""
        actor = None if by.is_system else by
        why = {"authority": "access_review", "campaign_id": item.campaign_id,
               "item_id": item.id}
        if item.kind == ItemKind.API_KEY:
            revoked = self.api_keys.revoke(item.entitlement, actor, **why)
            return "key revoked" if revoked else "already gone"
        if item.kind == ItemKind.ASSIGNMENT:
            return self._end_assignment(item)
        user = self.users.get(item.account_name)
        if item.kind == ItemKind.REGION:
            if item.entitlement not in user.regions:
                return "already gone"
            self.users.set_regions(user.username,
                                   [r for r in user.regions if r != item.entitlement], actor)
            return "region removed"
        if item.entitlement not in user.roles:
            return "already gone"
        remaining = [r for r in user.roles if r != item.entitlement]
        if not remaining:  # an account has at least one role: without it, none at all
            self.users.set_disabled(user.username, True, actor, **why)
            return "account disabled (last role)"
        self.users.set_roles(user.username, remaining, actor, authority=why)
        return "role removed"

    def _end_assignment(self, item: ReviewItem) -> str:
        collection, field = item.context["collection"], item.context["field"]
        record_id = item.context["record_id"]
        spec = self.vault.collection(collection)
        with self.db.read() as conn:
            row = store.record_row(conn, collection, record_id)
        if row is None or json.loads(row.clear).get(field) != item.account_name:
            return "already gone"
        # The integration's role edits the record (no person holds write on others'
        # assignments); the decision event names the reviewer.
        purpose = next((p for p in spec.fields[field].purposes
                        if all(d.masking is not None for d in self.policy.precheck(
                            SYSTEM, "write", spec, p, [field]).values())), None)
        if purpose is None:
            raise WorkflowConflict("no purpose allows ending this assignment",
                                   reason="assignment_not_writable")
        self.vault.update_record(SYSTEM, collection, record_id, {field: None}, purpose)
        return "assignment ended"

    def _settle(self, conn: Connection, by: Principal, item: ReviewItem) -> None:
        """An account whose items in the campaign are all decided is certified; a campaign
        with every item decided is complete."""
        open_items = sa.select(sa.func.count()).select_from(review_items).where(
            review_items.c.campaign_id == item.campaign_id, review_items.c.decision.is_(None))
        if conn.execute(open_items.where(
                review_items.c.account_id == item.account_id)).scalar_one() == 0:
            self.reviews.record_in(conn, item.account_kind, item.account_id,
                                   item.account_name, "certified", _name(by),
                                   f"campaign {item.campaign_id}", audit_actor(by),
                                   campaign_id=item.campaign_id)
        if conn.execute(open_items).scalar_one() == 0:
            done = conn.execute(review_campaigns.update().where(
                review_campaigns.c.id == item.campaign_id,
                review_campaigns.c.status == "open").values(
                status="complete", completed_at=self.clock.now()))
            if done.rowcount == 1:
                self.audit.append(conn, self.audit.event(
                    audit_actor(by), "review.campaign_complete",
                    details={"campaign_id": item.campaign_id}))

    # -- reading -----------------------------------------------------------------------------
    def overview(self, viewer: Principal, campaign_id: str | None = None,
                 decided: bool = False) -> Overview:
        """Everything for ``reviews:read`` holders (and the operator); otherwise the items
        the viewer may decide and the campaigns they are in. ``decided``: decided items
        too."""
        reader = viewer.is_system or viewer.can(Permission.REVIEWS_READ) or viewer.can(
            Permission.REVIEWS_MANAGE)
        q = sa.select(review_items, review_campaigns.c.due_at).join(
            review_campaigns, review_campaigns.c.id == review_items.c.campaign_id)
        if campaign_id is not None:
            q = q.where(review_items.c.campaign_id == campaign_id)
        if not decided:
            q = q.where(review_items.c.decision.is_(None))
        every = self.users.all()
        self._follow_managers(every)
        reviewers = self._reviewers(every)
        if not reader:
            assigned = review_items.c.reviewer_id == viewer.id
            if POOL_ROLE in viewer.roles:
                assigned = assigned | (review_items.c.reviewer_id.is_(None)
                                       & (review_items.c.reviewer_role == POOL_ROLE))
                assigned = assigned | review_items.c.reviewer_id.in_(reviewers.inactive)
            q = q.where(assigned, review_items.c.account_id != viewer.id)
        with self.db.read() as conn:
            rows = conn.execute(q.order_by(review_campaigns.c.created_at,
                                           review_items.c.account_name,
                                           review_items.c.kind,
                                           review_items.c.entitlement)).all()
        items = [self._view(r, reviewers) for r in rows]
        mine = {i.campaign_id for i in items}
        campaigns = [c for c in self.campaigns() if reader or c.id in mine]
        return Overview(campaigns, items, self.uncertified() if reader else None)

    def campaigns(self) -> list[Campaign]:
        now = self.clock.now()
        undecided = review_items.c.decision.is_(None)
        q = sa.select(
            review_campaigns,
            sa.func.count(review_items.c.id).label("total"),
            sa.func.count(review_items.c.decided_at).label("decided"),
            sa.func.sum(sa.case((undecided & (review_campaigns.c.due_at < now), 1),
                                else_=0)).label("overdue"),
        ).join(review_items, review_items.c.campaign_id == review_campaigns.c.id,
               isouter=True).group_by(*review_campaigns.c).order_by(
            review_campaigns.c.created_at)
        with self.db.read() as conn:
            return [Campaign(r.id, r.scope, r.status, r.created_by, r.created_at, r.due_at,
                             r.completed_at, int(r.total), int(r.decided), int(r.overdue or 0))
                    for r in conn.execute(q)]

    def campaign(self, campaign_id: str) -> Campaign:
        found = [c for c in self.campaigns() if c.id == campaign_id]
        if not found:
            raise NotFound(f"review campaign {campaign_id} not found",
                           code="campaign_not_found")
        return found[0]

    def uncertified(self) -> list[Uncertified]:
        """Active accounts (staff users, API keys nobody holds) not certified within 365
        days (NYDFS 500.7(a)(4))."""
        now = self.clock.now()
        last = self.reviews.last_certified()
        accounts = [("user", u.id, u.username) for u in self.users.all()
                    if u.disabled_at is None]
        accounts += [("api_key", k.id, k.name) for k in self.api_keys.all()
                     if k.owner_id is None and k.state(now) == "active"]
        return [Uncertified(kind, i, name, last.get(i)) for kind, i, name in accounts
                if certification_overdue(last.get(i), now)]

    def _row(self, campaign_id: str, item_id: str, every: list[User] | None = None
             ) -> ReviewItem:
        row = None
        if is_id(campaign_id) and is_id(item_id):
            with self.db.read() as conn:
                row = conn.execute(sa.select(review_items, review_campaigns.c.due_at).join(
                    review_campaigns, review_campaigns.c.id == review_items.c.campaign_id)
                    .where(review_items.c.id == item_id,
                           review_items.c.campaign_id == campaign_id)).first()
        if row is None:
            raise NotFound(f"review item {item_id} not found in campaign {campaign_id}",
                           code="review_item_not_found")
        return self._view(row, self._reviewers(self.users.all() if every is None else every))

    def _follow_managers(self, every: list[User]) -> None:
        """Undecided items about a person whose manager changed since the campaign opened go
        to the new manager (or the pool when there is none, or none active): the former
        manager no longer decides that person's access. Done before any item is shown or
        decided, with one event naming what moved."""
        by_id = {u.id: u for u in every}
        with self.db.read() as conn:
            rows = conn.execute(sa.select(
                review_items.c.id, review_items.c.account_id, review_items.c.reviewer_id,
                review_items.c.reviewer_role).where(review_items.c.decision.is_(None),
                                                    review_items.c.account_kind == "user")
            ).all()
        moves: dict[tuple[str | None, str | None], list[str]] = {}
        for r in rows:
            account = by_id.get(r.account_id)
            if account is None:
                continue
            manager = self._manager(account, by_id)
            want = (manager.id, None) if manager else (None, POOL_ROLE)
            if (r.reviewer_id, r.reviewer_role) != want:
                moves.setdefault(want, []).append(r.id)
        if not moves:
            return
        with self.db.write() as conn:
            moved = 0
            for (reviewer_id, role), ids in moves.items():
                # Only rows still elsewhere: a concurrent reader may have moved them already
                # (then nothing moves here, and no second event is written).
                moved += conn.execute(review_items.update().where(
                    review_items.c.id.in_(ids), review_items.c.decision.is_(None),
                    sa.or_(review_items.c.reviewer_id.is_distinct_from(reviewer_id),
                           review_items.c.reviewer_role.is_distinct_from(role)))
                    .values(reviewer_id=reviewer_id, reviewer_role=role)).rowcount
            if moved:
                self.audit.append(conn, self.audit.event(SYSTEM, "review.reassigned", details={
                    "moves": [{"reviewer_id": reviewer_id, "reviewer_role": role,
                               "items": sorted(ids)}
                              for (reviewer_id, role), ids in moves.items()]}))

    @staticmethod
    def _reviewers(every: list[User]) -> _Reviewers:
        return _Reviewers({u.id: u.username for u in every},
                          {u.id for u in every if u.disabled_at is not None})

    def _view(self, r: Any, reviewers: _Reviewers) -> ReviewItem:
        reviewer = reviewers.names.get(r.reviewer_id) if r.reviewer_id is not None else None
        # A manager disabled since the campaign opened (a leaver) hands their items to the pool.
        role = POOL_ROLE if r.reviewer_id in reviewers.inactive else r.reviewer_role
        note = self.notes.open(r.note_sealed, "review", r.id) if r.note_sealed else None
        return ReviewItem(r.id, r.campaign_id, r.account_kind, r.account_id, r.account_name,
                          r.kind, r.entitlement, json.loads(r.context), r.reviewer_id,
                          reviewer, role, r.due_at,
                          r.decision is None and r.due_at < self.clock.now(), r.decision,
                          r.decided_by, r.decided_at, note, r.effect)


def _key_context(k: ApiKey) -> dict[str, Any]:
    return {"key_id": k.id, "key_name": k.name, "role": k.role,
            "scopes": list(k.scopes) if k.scopes else None,
            "last_used_at": iso_or_none(k.last_used_at),
            "expires_at": iso_or_none(k.expires_at)}


def _name(by: Principal) -> str:
    if by.is_system:
        return f"operator:{request_context.get().operator or 'system'}"[:128]
    return (by.username or by.id)[:128]
