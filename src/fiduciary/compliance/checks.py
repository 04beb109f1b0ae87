"""The checks behind the controls catalogue: a registry of name -> function ``(ctx, control)
-> Outcome``. Each reads the store through set-based SQL (no per-record loop over the whole
store) and the runtime's services handed over in :class:`CheckContext`, and states its facts:
staff usernames, ids and counts, never a customer value. A failing outcome lists who or what
fails (the first :data:`MAX_LISTED`, and how many in all).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from fiduciary.access.policy import PolicyEngine
from fiduciary.access.users import UserService
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import iso, iso_or_none
from fiduciary.compliance.model import Control, Outcome, Status
from fiduciary.compliance.trail_check import verify_trail
from fiduciary.config import Settings
from fiduciary.crypto.aead import FIELD_FORMAT
from fiduciary.crypto.keyring import Keyring
from fiduciary.datamap import DataMap
from fiduciary.datamap.model import LawfulBasis
from fiduciary.errors import VerificationFailed
from fiduciary.privacy.deadlines import add_months
from fiduciary.privacy.dsr import OPEN as DSR_OPEN
from fiduciary.privacy.retention import period_parts
from fiduciary.privacy.ropa import configuration_digests
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    access_reviews,
    alerts,
    api_keys,
    audit_events,
    break_glass_grants,
    consent_events,
    dsr_requests,
    incident_obligations,
    legal_holds,
    records,
    system_state,
    users,
)
from fiduciary.workforce.hr import LAST_SYNC_KEY

#: Names (or items) a failing fact lists; the count says how many there are in all.
MAX_LISTED = 100
#: A sealed field is ``format byte ‖ DEK version (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)``
#: (``crypto.aead``): anything shorter, or with another format byte, is not our ciphertext.
_SEALED_MIN = 1 + 4 + 12 + 16
#: NYDFS 500.6(b): audit records of the cybersecurity program kept 5 years; HIPAA
#: 164.316(b)(2)(i): documentation kept 6 years from its creation or last effective date.
AUDIT_RETENTION = {"NYDFS 500.6(b)": 5 * 365 + 1, "HIPAA 164.316(b)(2)(i)": 6 * 365 + 1}
#: Where the reference values of ``authentication_settings`` come from.
AUTH_SOURCES = {
    "password_min_length": "NIST SP 800-63B 5.1.1.2",
    "lockout_attempts_max": "PCI DSS v4.0 8.3.4",
    "idle_minutes_max": "PCI DSS v4.0 8.2.8; HIPAA 164.312(a)(2)(iii)",
    "absolute_hours_max": "NIST SP 800-63B 4.2.3",
}


@dataclass(frozen=True)
class CheckContext:
    """Read access to the runtime's services and store for one run of the catalogue."""

    db: Database
    settings: Settings
    datamap: DataMap
    policy: PolicyEngine
    users: UserService
    trail: AuditTrail
    keyring: Keyring
    now: datetime
    #: Verify the audit trail from its first event instead of from the last verified size.
    full_audit: bool = False


CheckFn = Callable[[CheckContext, Control], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    run: CheckFn
    #: The parameters the catalogue may set, and their types (``float`` takes integers too).
    params: Mapping[str, type] = field(default_factory=dict)


CHECKS: dict[str, CheckSpec] = {}
_F = TypeVar("_F", bound=CheckFn)


def check(name: str, **params: type) -> Callable[[_F], _F]:
    def register(fn: _F) -> _F:
        CHECKS[name] = CheckSpec(name, fn, params)
        return fn
    return register


def _param(control: Control, name: str, default: float) -> Any:
    return control.params.get(name, default)


def _listed(items: list[Any]) -> dict[str, Any]:
    return {"count": len(items), "items": items[:MAX_LISTED]}


def _outcome(failing: bool, facts: dict[str, Any], event_ids: Iterable[str] = ()) -> Outcome:
    return Outcome(Status.FAIL if failing else Status.PASS, facts, tuple(event_ids))


def _active_users(conn: sa.Connection) -> list[Any]:
    return list(conn.execute(sa.select(users.c.id, users.c.username, users.c.roles,
                                  users.c.created_at, users.c.last_login_at,
                                  users.c.mfa_enrolled_at)
                        .where(users.c.disabled_at.is_(None))
                        .order_by(users.c.username)))


def _latest_event(conn: sa.Connection, action: str) -> Any:
    """The newest audit event of ``action`` (read backwards from the end of the trail)."""
    return conn.execute(sa.select(audit_events.c.event_id, audit_events.c.at,
                                  audit_events.c.event)
                        .where(audit_events.c.action == action)
                        .order_by(audit_events.c.seq.desc()).limit(1)).first()


def _events(actions: tuple[str, ...]) -> sa.Select[Any]:
    """Audit events of ``actions``, in trail order (the caller bounds the read)."""
    return (sa.select(audit_events.c.seq, audit_events.c.event_id, audit_events.c.action,
                      audit_events.c.at, audit_events.c.event)
            .where(audit_events.c.action.in_(actions)).order_by(audit_events.c.seq))


def _details(row: Any) -> dict[str, Any]:
    if row is None or row.event is None:
        return {}
    details: dict[str, Any] = json.loads(row.event).get("details") or {}
    return details


# -- identity and access ----------------------------------------------------------------------
@check("mfa_enrolled", enrolment_grace_days=int)
def mfa_enrolled(ctx: CheckContext, control: Control) -> Outcome:
    """Every active account has enrolled its second factor (TOTP, confirmed at its first
    sign-in); a new account has ``enrolment_grace_days`` to do it."""
    grace = timedelta(days=_param(control, "enrolment_grace_days", 3))
    with ctx.db.read() as conn:
        active = _active_users(conn)
    missing = [u for u in active if u.mfa_enrolled_at is None]
    late = [u.username for u in missing if u.created_at < ctx.now - grace]
    pending = [u.username for u in missing if u.created_at >= ctx.now - grace]
    return _outcome(bool(late), {
        "active_accounts": len(active), "enrolled": len(active) - len(missing),
        "without_mfa": _listed(late), "enrolling_within_grace": _listed(pending)})


def _classes_reached(ctx: CheckContext) -> dict[str, set[str]]:
    """Role -> the data classes its grants reach (those a course unlocks)."""
    needs = ctx.users.training_rules.unlocks
    out: dict[str, set[str]] = {}
    for role in ctx.policy.pack.roles.values():
        reached = {f.classification.value for g in role.grants for c in g.collections
                   if c in ctx.datamap.collections
                   for f in ctx.datamap.collections[c].fields.values()
                   if g.fields is None or f.name in g.fields}
        out[role.name] = reached & set(needs)
    return out


@check("training_current")
def training_current(ctx: CheckContext, control: Control) -> Outcome:
    """Every active account whose roles reach a data class has that class's courses current
    (the training gate's own rule, grace period included)."""
    reached = _classes_reached(ctx)
    with ctx.db.read() as conn:
        active = _active_users(conn)
    trained = ctx.users.training_of_all()
    rules = ctx.users.training_rules
    with_access = 0
    failing = []
    for u in active:
        classes = set().union(*(reached.get(r, set()) for r in json.loads(u.roles)))
        if not classes:
            continue
        with_access += 1
        blocked = rules.blocked(trained.get(u.id, []), u.created_at, ctx.now)
        gaps = {c: str(blocked[c]) for c in sorted(classes) if c in blocked}
        if gaps:
            failing.append({"username": u.username, "classes": gaps})
    return _outcome(bool(failing), {"accounts_with_data_access": with_access,
                                    "not_current": _listed(failing)})


@check("access_reviewed", max_age_days=int)
def access_reviewed(ctx: CheckContext, control: Control) -> Outcome:
    """Every active account (staff user or unexpired API key) certified within
    ``max_age_days``; an account younger than that counts from its creation."""
    cutoff = ctx.now - timedelta(days=_param(control, "max_age_days", 365))
    certified = (sa.select(access_reviews.c.account_id,
                           sa.func.max(access_reviews.c.at).label("at"))
                 .where(access_reviews.c.decision == "certified")
                 .group_by(access_reviews.c.account_id).subquery())
    with ctx.db.read() as conn:
        people = conn.execute(
            sa.select(users.c.username.label("name"), users.c.created_at, certified.c.at)
            .outerjoin(certified, certified.c.account_id == users.c.id)
            .where(users.c.disabled_at.is_(None))).all()
        keys = conn.execute(
            sa.select(api_keys.c.name, api_keys.c.id, api_keys.c.created_at, certified.c.at)
            .outerjoin(certified, certified.c.account_id == api_keys.c.id)
            .where(api_keys.c.revoked_at.is_(None),
                   sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > ctx.now))
        ).all()
    overdue = [{"kind": kind, "account": r.name, "last_certified_at": iso_or_none(r.at)}
               for kind, rows in (("user", people), ("api_key", keys)) for r in rows
               if max(r.at or r.created_at, r.created_at) < cutoff]
    return _outcome(bool(overdue), {"active_accounts": len(people) + len(keys),
                                    "not_reviewed": _listed(overdue)})


@check("leavers_disabled", max_sync_age_days=int)
def leavers_disabled(ctx: CheckContext, control: Control) -> Outcome:
    """The HR feed was applied within ``max_sync_age_days``, and no account it disabled as a
    leaver was enabled again since the last sync (a re-hire is confirmed by the next sync:
    one that still lists them as a leaver disables them again)."""
    with ctx.db.read() as conn:
        raw = conn.execute(sa.select(system_state.c.value).where(
            system_state.c.key == LAST_SYNC_KEY)).scalar()
        if raw is None:
            return _outcome(True, {"last_sync": None,
                                   "problem": "no HR sync recorded: leavers cannot be checked"})
        last = json.loads(raw)
        synced = datetime.fromisoformat(last["at"])
        active = {r.username for r in _active_users(conn)}
        # Accounts enabled since the last sync (the time index bounds the read), in trail
        # order: a sync clears those before it.
        back: dict[str, tuple[int, str]] = {}  # username -> the enabling event (seq, id)
        for r in conn.execute(_events(("user.enable", "hr.sync")).where(
                audit_events.c.at >= synced)):
            name = _details(r).get("username")
            if r.action == "hr.sync":
                back.clear()
            elif isinstance(name, str) and name in active:
                back[name] = (r.seq, r.event_id)
        # Only for those (usually none): was their last disabling before it a leaver's?
        left: dict[str, bool] = {}
        if back:
            for r in conn.execute(_events(("user.disable",)).where(
                    audit_events.c.seq < max(seq for seq, _ in back.values()),
                    sa.or_(*(audit_events.c.event.contains(f'"username":{json.dumps(n)}')
                             for n in back)))):
                d = _details(r)
                name = d.get("username")
                if isinstance(name, str) and name in back and r.seq < back[name][0]:
                    left[name] = d.get("reason") == "leaver"
    re_enabled = sorted(n for n in back if left.get(n))
    stale = synced < ctx.now - timedelta(days=_param(control, "max_sync_age_days", 7))
    facts = {"last_sync": {"at": last["at"], "rows": last.get("rows"),
                           "leavers_disabled": last.get("disabled")},
             "sync_overdue": stale, "leavers_enabled_since_sync": _listed(re_enabled)}
    return _outcome(stale or bool(re_enabled), facts,
                    [back[n][1] for n in re_enabled][:MAX_LISTED])


@check("no_dormant_accounts", max_idle_days=int)
def no_dormant_accounts(ctx: CheckContext, control: Control) -> Outcome:
    """No active account unused (no sign-in since, or since creation) for ``max_idle_days``
    (default: ``FIDUCIARY_DORMANT_DISABLE_DAYS``)."""
    days = _param(control, "max_idle_days", ctx.settings.dormant_disable_days)
    with ctx.db.read() as conn:
        active = _active_users(conn)
    dormant = [{"username": u.username, "idle_days": (ctx.now - (u.last_login_at or
                                                                 u.created_at)).days}
               for u in active
               if (u.last_login_at or u.created_at) < ctx.now - timedelta(days=days)]
    return _outcome(bool(dormant), {"active_accounts": len(active), "max_idle_days": days,
                                    "dormant": _listed(dormant)})


@check("authentication_settings", password_min_length=int, lockout_attempts_max=int,
       idle_minutes_max=int, absolute_hours_max=int)
def authentication_settings(ctx: CheckContext, control: Control) -> Outcome:
    """The policy pack's password, lockout and session settings against reference values
    (``AUTH_SOURCES`` names where each comes from)."""
    s = ctx.policy.pack.settings
    rows = {
        "password_min_length": (s.password_min_length, _param(control, "password_min_length",
                                                               8), "at least"),
        "lockout_attempts_max": (s.lockout_attempts, _param(control, "lockout_attempts_max",
                                                            10), "at most"),
        "idle_minutes_max": (s.idle_minutes, _param(control, "idle_minutes_max", 15),
                             "at most"),
        "absolute_hours_max": (s.absolute_hours, _param(control, "absolute_hours_max", 12),
                               "at most"),
    }
    facts: dict[str, Any] = {}
    failing = []
    for name, (value, ref, how) in rows.items():
        ok = value >= ref if how == "at least" else value <= ref
        facts[name] = {"configured": value, "required": f"{how} {ref}",
                       "source": AUTH_SOURCES[name], "ok": ok}
        if not ok:
            failing.append(name)
    facts["lockout_minutes"] = {"configured": s.lockout_minutes}
    facts["failing"] = failing
    return _outcome(bool(failing), facts)


@check("break_glass_reviewed", review_within_days=int)
def break_glass_reviewed(ctx: CheckContext, control: Control) -> Outcome:
    """Every break-glass grant that ended more than ``review_within_days`` ago has been
    reviewed by someone other than who used it."""
    cutoff = ctx.now - timedelta(days=_param(control, "review_within_days", 7))
    g = break_glass_grants
    with ctx.db.read() as conn:
        waiting = conn.execute(sa.select(g.c.id, g.c.expires_at, users.c.username)
                               .join(users, users.c.id == g.c.user_id)
                               .where(g.c.reviewed_at.is_(None), g.c.expires_at < ctx.now)
                               .order_by(g.c.expires_at)).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(g)).scalar_one()
    overdue = [{"grant_id": r.id, "username": r.username, "ended_at": iso(r.expires_at)}
               for r in waiting if r.expires_at < cutoff]
    return _outcome(bool(overdue), {"grants": total,
                                    "awaiting_review": len(waiting),
                                    "review_overdue": _listed(overdue)})


# -- data protection --------------------------------------------------------------------------
def _is_sealed(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(blob) >= _SEALED_MIN and blob[0] == FIELD_FORMAT


@check("sensitive_fields_encrypted", sample_size=int)
def sensitive_fields_encrypted(ctx: CheckContext, control: Control) -> Outcome:
    """Every field above ``internal`` is declared encrypted (the data map derives it from the
    classification), and a sample of stored records — the newest ``sample_size`` and as many
    at random — holds none of them in its clear part, and every sealed value is our
    ciphertext envelope (a value written by direct SQL is not)."""
    n = int(_param(control, "sample_size", 1000))
    sensitive = {name: {f.name for f in spec.fields.values() if f.classification.encrypted}
                 for name, spec in ctx.datamap.collections.items()}
    declared = sum(len(v) for v in sensitive.values())
    unencrypted = [f"{c}.{f.name}" for c, spec in ctx.datamap.collections.items()
                   for f in spec.fields.values() if f.classification.encrypted and
                   not f.encrypted]
    cols = (records.c.id, records.c.collection, records.c.clear, records.c.sealed)
    with ctx.db.read() as conn:
        sample = {r.id: r for q in (
            sa.select(*cols).order_by(records.c.updated_at.desc()).limit(n),
            sa.select(*cols).order_by(sa.func.random()).limit(n)) for r in conn.execute(q)}
    problems = []
    for r in sample.values():
        fields = sensitive.get(r.collection, set())
        try:
            clear, sealed = json.loads(r.clear), json.loads(r.sealed)
        except ValueError:
            problems.append({"record_id": r.id, "collection": r.collection,
                             "problem": "not JSON"})
            continue
        for name in sorted(fields & set(clear)):
            problems.append({"record_id": r.id, "collection": r.collection, "field": name,
                             "problem": "sensitive field stored in clear"})
        for name, value in sorted(sealed.items()):
            if not _is_sealed(value):
                problems.append({"record_id": r.id, "collection": r.collection,
                                 "field": name, "problem": "not a Fiduciary ciphertext"})
    return _outcome(bool(problems or unencrypted), {
        "sensitive_fields": declared, "declared_unencrypted": unencrypted,
        "records_sampled": len(sample), "plaintext_found": _listed(problems)})


@check("kek_age")
def kek_age(ctx: CheckContext, control: Control) -> Outcome:
    """The active key-encryption key is younger than ``FIDUCIARY_KEK_ROTATION_DAYS``."""
    versions = ctx.keyring.versions()
    active = ctx.keyring.active_version()
    current = next(v for v in versions if v.version == active)
    created = datetime.fromisoformat(current.created_at)
    age = (ctx.now - created).days
    limit = ctx.settings.kek_rotation_days
    return _outcome(age > limit, {
        "active_version": active, "created_at": iso(created), "age_days": age,
        "rotation_days": limit, "versions": len(versions)})


def _retention_cutoff(today: date, period: str) -> date | None:
    """The last creation day whose records have passed ``period`` today (``P7Y`` → seven
    years back), or None for a period this check cannot count (days)."""
    parts = period_parts(period)
    if parts is None:
        return None
    years, months, days = parts
    return add_months(today, -(12 * years + months)) - timedelta(days=days)


@check("retention_enforced", max_hours_since_run=int)
def retention_enforced(ctx: CheckContext, control: Control) -> Outcome:
    """The retention job ran within ``max_hours_since_run``; no record of a collection kept
    for a period from its creation or last update is older than that period, unless a legal
    hold covers it (other clocks run on fields and are applied by the job itself)."""
    hours = _param(control, "max_hours_since_run", 48)
    today = ctx.now.date()
    held = sa.select(legal_holds.c.id).where(legal_holds.c.released_at.is_(None), sa.or_(
        sa.and_(legal_holds.c.scope == "subject", legal_holds.c.target == records.c.subject_id),
        sa.and_(legal_holds.c.scope == "record", legal_holds.c.target == records.c.id),
        sa.and_(legal_holds.c.scope == "collection",
                legal_holds.c.target == records.c.collection)))
    overdue: dict[str, int] = {}
    with ctx.db.read() as conn:
        # A run inside the window is found through the time index; only a missing one
        # costs a read back through the trail (to say when it last ran).
        run = conn.execute(_events(("retention.run",)).where(
            audit_events.c.at >= ctx.now - timedelta(hours=hours))
            .order_by(None).order_by(audit_events.c.seq.desc()).limit(1)).first() \
            or _latest_event(conn, "retention.run")
        for name, spec in sorted(ctx.datamap.collections.items()):
            rule = spec.retention
            if rule.start not in ("created", "updated") or rule.when or not rule.period:
                continue
            cutoff = _retention_cutoff(today, rule.period)
            if cutoff is None:
                continue
            column = records.c.created_at if rule.start == "created" else records.c.updated_at
            since = datetime.combine(cutoff, datetime.min.time(), tzinfo=ctx.now.tzinfo)
            count = conn.execute(sa.select(sa.func.count()).select_from(records).where(
                records.c.collection == name, column < since, ~sa.exists(held))).scalar_one()
            if count:
                overdue[name] = int(count)
    last = None if run is None else run.at
    stale = last is None or last < ctx.now - timedelta(hours=hours)
    facts = {"last_run_at": iso_or_none(last), "last_run": _details(run) or None,
             "run_overdue": stale, "records_past_period": overdue}
    return _outcome(stale or bool(overdue), facts, [run.event_id] if run else [])


@check("dsr_on_time", min_on_time_rate=float, window_days=int)
def dsr_on_time(ctx: CheckContext, control: Control) -> Outcome:
    """No open data-subject request past its due date, and of those closed in the last
    ``window_days`` at least ``min_on_time_rate`` closed by their due date."""
    window = ctx.now - timedelta(days=_param(control, "window_days", 365))
    minimum = float(_param(control, "min_on_time_rate", 0.95))
    d = dsr_requests
    with ctx.db.read() as conn:
        late = conn.execute(sa.select(d.c.id, d.c.type, d.c.regime, d.c.due_at)
                            .where(d.c.status.in_(DSR_OPEN), d.c.due_at < ctx.now)
                            .order_by(d.c.due_at)).all()
        closed, on_time = conn.execute(sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case(
                (d.c.closed_at <= d.c.due_at, 1), else_=0)), 0))
            .where(d.c.closed_at.is_not(None), d.c.closed_at >= window)).one()
        still_open = conn.execute(sa.select(sa.func.count()).select_from(d).where(
            d.c.status.in_(DSR_OPEN))).scalar_one()
    rate = round(on_time / closed, 4) if closed else None
    facts = {"open": still_open, "closed_in_window": closed, "closed_on_time": on_time,
             "on_time_rate": rate, "min_on_time_rate": minimum,
             "overdue": _listed([{"request_id": r.id, "type": r.type, "regime": r.regime,
                                  "due_at": iso(r.due_at)} for r in late])}
    return _outcome(bool(late) or (rate is not None and rate < minimum), facts)


@check("breach_obligations_on_time")
def breach_obligations_on_time(ctx: CheckContext, control: Control) -> Outcome:
    """No breach-notification obligation still due past its deadline."""
    o = incident_obligations
    with ctx.db.read() as conn:
        late = conn.execute(sa.select(o.c.incident_id, o.c.rule_id, o.c.recipient, o.c.due_at)
                            .where(o.c.status == "due", o.c.due_at < ctx.now)
                            .order_by(o.c.due_at)).all()
        due = conn.execute(sa.select(sa.func.count()).select_from(o).where(
            o.c.status == "due")).scalar_one()
    return _outcome(bool(late), {"obligations_due": due, "overdue": _listed([
        {"incident_id": r.incident_id, "rule": r.rule_id, "recipient": r.recipient,
         "due_at": iso(r.due_at)} for r in late])})


def _consent_purpose(ctx: CheckContext, collection: str) -> str | None:
    spec = ctx.datamap.collections[collection]
    if spec.retention.consent_purpose:
        return spec.retention.consent_purpose
    return next((p for f in spec.fields.values() for p in sorted(f.purposes)
                 if p in ctx.datamap.purposes and ctx.datamap.purposes[p].consent_required),
                None)


@check("consent_for_consent_based")
def consent_for_consent_based(ctx: CheckContext, control: Control) -> Outcome:
    """Every record of a collection held on the basis of consent (GDPR 6(1)(a)) belongs to a
    subject whose latest consent entry for its purpose grants it."""
    based = [c for c, spec in sorted(ctx.datamap.collections.items())
             if spec.lawful_basis == LawfulBasis.CONSENT]
    if not based:
        return Outcome(Status.NOT_APPLICABLE, {"consent_based_collections": []})
    without: dict[str, dict[str, Any]] = {}
    total = 0
    with ctx.db.read() as conn:
        for name in based:
            purpose = _consent_purpose(ctx, name)
            latest = (sa.select(consent_events.c.granted)
                      .where(consent_events.c.subject_id == records.c.subject_id,
                             consent_events.c.purpose == purpose)
                      .order_by(consent_events.c.recorded_at.desc(),
                                consent_events.c.id.desc())
                      .limit(1).correlate(records).scalar_subquery())
            total += conn.execute(sa.select(sa.func.count()).select_from(records).where(
                records.c.collection == name)).scalar_one()
            ids = conn.execute(sa.select(records.c.id).where(
                records.c.collection == name,
                sa.func.coalesce(latest, sa.false()) == sa.false())
                .order_by(records.c.id)).scalars().all()
            if ids:
                without[name] = {"purpose": purpose, **_listed(list(ids))}
    return _outcome(bool(without), {"consent_based_collections": based, "records": total,
                                    "without_consent": without})


@check("ropa_current")
def ropa_current(ctx: CheckContext, control: Control) -> Outcome:
    """The latest records of processing were generated from the data map and policy pack in
    force (after their last change)."""
    digests = configuration_digests(ctx.datamap, ctx.policy)
    with ctx.db.read() as conn:
        ropa = _latest_event(conn, "ropa.generated")
    d = _details(ropa)
    stale = [k for k in ("datamap_sha256", "policy_sha256") if d.get(k) != digests[k]]
    return _outcome(ropa is None or bool(stale), {
        "generated_at": iso_or_none(ropa.at if ropa else None),
        "in_force": digests, "out_of_date": stale if ropa else ["never generated"]},
        [ropa.event_id] if ropa else [])


# -- audit and monitoring ---------------------------------------------------------------------
@check("audit_trail_verifies", max_checkpoint_age_hours=int, full_every_days=int)
def audit_trail_verifies(ctx: CheckContext, control: Control) -> Outcome:
    """The trail verifies (incrementally from the last verified size, or in full: asked, or
    the last full verification ``full_every_days`` old, so an edit to an event verified
    earlier is found within that many days), and the latest signed checkpoint is at most
    ``max_checkpoint_age_hours`` old unless it already covers every event."""
    try:
        state = verify_trail(ctx.db, ctx.trail, ctx.settings.audit_retention_days, ctx.now,
                             full=ctx.full_audit,
                             full_every=timedelta(days=_param(control, "full_every_days", 7)))
    except VerificationFailed as exc:
        return _outcome(True, {"verified": False, "problem": str(exc)})
    facts = {"verified": True, **state.facts(ctx.now)}
    cp = state.checkpoint
    if cp is None:
        return _outcome(True, {**facts, "problem": "no signed checkpoint yet"})
    limit = timedelta(hours=_param(control, "max_checkpoint_age_hours", 24))
    behind = state.size > cp.size or state.unsequenced > 0
    stale = behind and cp.timestamp < ctx.now - limit
    if stale:
        facts["problem"] = "the latest checkpoint is older than the limit and events follow it"
    return _outcome(stale, facts)


@check("audit_retention_configured")
def audit_retention_configured(ctx: CheckContext, control: Control) -> Outcome:
    """``FIDUCIARY_AUDIT_RETENTION_DAYS`` at least the longest period the regulations ask."""
    days = ctx.settings.audit_retention_days
    required = {k: {"days": v, "ok": days >= v} for k, v in AUDIT_RETENTION.items()}
    return _outcome(not all(r["ok"] for r in required.values()),
                    {"configured_days": days, "required": required})


@check("alerts_triaged", max_open_hours=int)
def alerts_triaged(ctx: CheckContext, control: Control) -> Outcome:
    """No monitoring alert still open (not triaged) after ``max_open_hours`` (default:
    ``FIDUCIARY_ALERT_TRIAGE_HOURS``)."""
    hours = _param(control, "max_open_hours", ctx.settings.alert_triage_hours)
    with ctx.db.read() as conn:
        late = conn.execute(sa.select(alerts.c.id, alerts.c.detection, alerts.c.severity,
                                      alerts.c.created_at)
                            .where(alerts.c.status == "open",
                                   alerts.c.created_at < ctx.now - timedelta(hours=hours))
                            .order_by(alerts.c.created_at)).all()
        still_open = conn.execute(sa.select(sa.func.count()).select_from(alerts).where(
            alerts.c.status == "open")).scalar_one()
    return _outcome(bool(late), {"open": still_open, "triage_target_hours": hours,
                                 "untriaged": _listed([
                                     {"alert_id": r.id, "detection": r.detection,
                                      "severity": r.severity, "raised_at": iso(r.created_at)}
                                     for r in late])})
