"""Tables (SQLAlchemy Core). Every customer-data table carries ``subject_id`` so the schema can
shard by subject; values above ``internal`` are stored only as ciphertext in ``records.sealed``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stores UTC; always returns timezone-aware datetimes, on SQLite as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)


ID = sa.String(36)

subjects = sa.Table(
    "subjects",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="active", index=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    #: JSON of the clear attributes policies may test (vip, employee, region), copied from the
    #: subject's fields marked ``subject_attribute`` in the data map.
    sa.Column("attributes", sa.Text, nullable=False, server_default="{}"),
)

#: Retired: data keys now live in the key store (crypto/keystore.py), apart from the database.
#: Kept empty so stores made before the move can be migrated (runtime moves any rows out).
subject_keys = sa.Table(
    "subject_keys",
    metadata,
    sa.Column("subject_id", ID, sa.ForeignKey("subjects.id"), primary_key=True),
    sa.Column("dek_version", sa.Integer, nullable=False),
    sa.Column("kek_version", sa.Integer, nullable=False, index=True),
    sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subject_id", ID, sa.ForeignKey("subjects.id"), nullable=False, index=True),
    sa.Column("collection", sa.String(64), nullable=False, index=True),
    #: JSON of public and internal fields.
    sa.Column("clear", sa.Text, nullable=False),
    #: JSON of field -> base64 AES-GCM ciphertext.
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    #: The record's write: 1 on create, +1 on each update; every sealed field binds it in its
    #: associated data. 0: written before versions existed (the older associated data).
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    #: Relationship conditions read one subject's records of one collection.
    sa.Index("ix_records_subject_collection", "subject_id", "collection"),
)

#: Equality search without decryption: a keyed digest per searchable field of each record.
blind_index = sa.Table(
    "blind_index",
    metadata,
    sa.Column("record_id", ID, sa.ForeignKey("records.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("subject_id", ID, nullable=False, index=True),
    sa.Column("digest", sa.LargeBinary, nullable=False, index=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    #: JSON list of actions the key may take (null: whatever its role allows).
    sa.Column("scopes", sa.Text, nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    #: The approval a key with a data role waits for; it authenticates only once this is null.
    sa.Column("approval_id", ID, nullable=True),
    #: The staff user the key belongs to (who was shown its secret): reviewed with them,
    #: revoked when they leave. Null: a service key nobody holds personally.
    sa.Column("owner_id", ID, nullable=True, index=True),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("must_change_password", sa.Boolean, nullable=False),
    #: TOTP secret sealed under a keyring-derived key: a DBA cannot mint codes.
    sa.Column("totp_sealed", sa.LargeBinary, nullable=False),
    sa.Column("totp_last_step", sa.BigInteger, nullable=True),
    sa.Column("mfa_enrolled_at", UTCDateTime(), nullable=True),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("regions", sa.Text, nullable=False, server_default="[]"),
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("password_changed_at", UTCDateTime(), nullable=False),
    sa.Column("last_login_at", UTCDateTime(), nullable=True),
    #: The customer who is this staff member (monitoring: self and co-worker access).
    sa.Column("subject_id", ID, nullable=True, index=True),
    #: The surname only as a blind-index digest of ``persons.last_name`` (same_surname).
    sa.Column("surname_digest", sa.LargeBinary, nullable=True),
    #: The user's manager (reviews their access in campaigns) and HR's id for them (HR sync).
    sa.Column("manager_id", ID, nullable=True, index=True),
    sa.Column("employee_id", sa.String(64), nullable=True, unique=True),
)

#: Failed logins by username, known or not, so lockout reveals nothing about which exist.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("locked_until", UTCDateTime(), nullable=True),
)

recovery_codes = sa.Table(
    "recovery_codes",
    metadata,
    sa.Column("code_hash", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("used_at", UTCDateTime(), nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_hash", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

training_records = sa.Table(
    "training_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("course", sa.String(128), nullable=False),
    sa.Column("completed_at", sa.Date, nullable=False),
    sa.Column("expires_at", sa.Date, nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    # Migration 0013 (workforce training): the course version passed (null: recorded before
    # versions, counted as the current one), ``assessment`` or ``external``, and an external
    # completion's evidence reference.
    sa.Column("course_version", sa.String(32), nullable=True),
    sa.Column("source", sa.String(16), nullable=True),
    sa.Column("evidence", sa.String(256), nullable=True),
)

break_glass_grants = sa.Table(
    "break_glass_grants",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("subject_ids", sa.Text, nullable=False),
    sa.Column("justification", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    #: Every grant is marked for review until a reviewer closes it.
    sa.Column("reviewed_at", UTCDateTime(), nullable=True),
    sa.Column("reviewed_by", sa.String(64), nullable=True),
    #: ``justified`` or ``unjustified``, by someone other than the requester.
    sa.Column("review_outcome", sa.String(16), nullable=True),
)

break_glass_uses = sa.Table(
    "break_glass_uses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("grant_id", ID, sa.ForeignKey("break_glass_grants.id"), nullable=False,
              index=True),
    sa.Column("subject_id", ID, nullable=False),
    sa.Column("record_id", ID, nullable=True),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

access_reviews = sa.Table(
    "access_reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_kind", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("account_name", sa.String(128), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)

#: The audit trail: one row per event, in insertion order; ``leaf_index`` is assigned by the
#: sequencer in commit order and makes the row a leaf of the Merkle log.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("event_id", ID, nullable=False, unique=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("action", sa.String(48), nullable=False),
    #: Indexed by ix_audit_events_actor_leaf below (its leading column).
    sa.Column("actor", sa.String(128), nullable=False),
    #: Space-separated ids, for "who saw this customer" without parsing every event.
    sa.Column("subject_ids", sa.Text, nullable=False),
    sa.Column("record_ids", sa.Text, nullable=False),
    #: The event as RFC 8785 canonical JSON: exactly the bytes its leaf hash covers.
    #: Null once pruned after its retention period (its leaf hash stays in audit_nodes).
    sa.Column("event", sa.Text, nullable=True),
    sa.Column("leaf_index", sa.BigInteger, nullable=True, unique=True),
    #: A principal's events in leaf order: an incident's scope pages through them.
    sa.Index("ix_audit_events_actor_leaf", "actor", "leaf_index"),
)

audit_nodes = sa.Table(
    "audit_nodes",
    metadata,
    sa.Column("level", sa.Integer, primary_key=True),
    sa.Column("index", sa.BigInteger, primary_key=True),
    sa.Column("hash", sa.LargeBinary, nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
)

#: Small facts the system keeps about itself (such as the digest of the configuration in force).
system_state = sa.Table(
    "system_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: "Who touched this customer": one row per (subject, event), so a subject's trail is an index
#: lookup instead of a scan of every event.
audit_subjects = sa.Table(
    "audit_subjects",
    metadata,
    sa.Column("subject_id", ID, primary_key=True),
    sa.Column("event_id", ID, primary_key=True),
)

# -- privacy operations -------------------------------------------------------------------------

#: The consent ledger: append-only; the current state per (subject, purpose) is the latest row.
consent_events = sa.Table(
    "consent_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subject_id", ID, nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("granted", sa.Boolean, nullable=False),
    sa.Column("notice_id", sa.String(128), nullable=True),
    sa.Column("notice_version", sa.String(64), nullable=True),
    sa.Column("method", sa.String(48), nullable=False),
    sa.Column("channel", sa.String(48), nullable=True),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Column("recorded_by", sa.String(128), nullable=False),
    sa.Index("ix_consent_events_subject_purpose", "subject_id", "purpose", "recorded_at"),
)

#: Data-subject requests (GDPR Art. 15-22, CCPA). Kept at least 24 months (CCPA regs 7101),
#: after the subject's erasure too: the row holds ids, dates and outcomes, never their data.
dsr_requests = sa.Table(
    "dsr_requests",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subject_id", ID, nullable=False, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("regime", sa.String(8), nullable=False),
    sa.Column("channel", sa.String(32), nullable=True),
    sa.Column("status", sa.String(24), nullable=False, index=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("original_due_at", UTCDateTime(), nullable=False),
    sa.Column("acknowledge_by", UTCDateTime(), nullable=True),
    sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
    sa.Column("extension_reason", sa.Text, nullable=True),
    sa.Column("verified_at", UTCDateTime(), nullable=True),
    sa.Column("verified_by", sa.String(128), nullable=True),
    sa.Column("verification_method", sa.String(64), nullable=True),
    sa.Column("closed_at", UTCDateTime(), nullable=True),
    #: Why a request was denied or only partly fulfilled (text the DPO writes).
    sa.Column("outcome_reason", sa.Text, nullable=True),
    #: JSON: what fulfilment produced (package file, erasure certificate id, records kept).
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

#: Every step of a request, in order (the audit trail has them too; this is the ticket view).
dsr_steps = sa.Table(
    "dsr_steps",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("request_id", ID, nullable=False, index=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
)

#: Legal holds block retention purges and erasure of what they cover.
legal_holds = sa.Table(
    "legal_holds",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("scope", sa.String(16), nullable=False),  # subject | record | collection
    sa.Column("target", sa.String(64), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("released_at", UTCDateTime(), nullable=True),
    sa.Column("released_by", sa.String(128), nullable=True),
)

#: Erasures of subjects: the certificate (what was erased, kept and why, when), and whether
#: records kept under a duty still wait for it to end (``pending``).
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subject_id", ID, nullable=False, index=True),
    sa.Column("request_id", ID, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # complete | pending
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("certificate", sa.Text, nullable=False),
)

# -- identity governance ------------------------------------------------------------------------

#: Changes that give an account a data role or ``privacy:manage`` through the API: proposed by
#: one principal, applied only when a different person approves (separation of duties).
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", ID, primary_key=True),
    #: user.create | user.set_roles | user.re_enrol | apikey.create
    sa.Column("kind", sa.String(32), nullable=False),
    #: The username, or the API key's id.
    sa.Column("target", sa.String(128), nullable=False),
    #: JSON: what is to be applied (roles, regions; a key's name, role and scopes).
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # pending|approved|rejected
    sa.Column("proposed_by_kind", sa.String(16), nullable=False),
    sa.Column("proposed_by_id", sa.String(128), nullable=False),
    sa.Column("proposed_by_name", sa.String(128), nullable=False),
    sa.Column("proposed_at", UTCDateTime(), nullable=False),
    sa.Column("decided_by_kind", sa.String(16), nullable=True),
    sa.Column("decided_by_id", sa.String(128), nullable=True),
    sa.Column("decided_by_name", sa.String(128), nullable=True),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)

#: A user who has still to enrol (choose a password, get a TOTP secret and recovery codes)
#: with a one-time code: kept as a keyed hash, null until the code is issued.
enrolments = sa.Table(
    "enrolments",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("code_hash", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("issued_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)


# -- monitoring ---------------------------------------------------------------------------------

#: Alerts raised by the detections (``fiduciary.monitoring``): ids and counts, never a value.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("detection", sa.String(48), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("principal_kind", sa.String(16), nullable=False),
    sa.Column("principal_id", sa.String(128), nullable=True, index=True),
    sa.Column("principal_name", sa.String(128), nullable=True, index=True),
    #: Space-separated ids.
    sa.Column("subject_ids", sa.Text, nullable=False),
    sa.Column("event_ids", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    #: JSON of counts and thresholds behind the alert.
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
    #: One alert per finding, however often the trail is read again.
    sa.Column("dedup_key", sa.String(255), nullable=False, unique=True),
    sa.Column("assignee", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

#: Triage: assignment, comments, dismissal, escalation. Free text is sealed (it may name people).
alert_actions = sa.Table(
    "alert_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("text_sealed", sa.LargeBinary, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)

#: Findings not to raise until ``expires_at``: a detection for a principal, a subject or both.
monitor_suppressions = sa.Table(
    "monitor_suppressions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("detection", sa.String(48), nullable=False),
    sa.Column("principal", sa.String(128), nullable=True),
    sa.Column("subject_id", ID, nullable=True),
    sa.Column("reason_sealed", sa.LargeBinary, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

#: Subjects watched beyond their attributes (a litigant, a journalist), with their handlers.
monitor_watchlist = sa.Table(
    "monitor_watchlist",
    metadata,
    sa.Column("subject_id", ID, primary_key=True),
    sa.Column("category", sa.String(32), nullable=False),
    #: JSON list of usernames whose work involves the subject.
    sa.Column("handlers", sa.Text, nullable=False, server_default="[]"),
    sa.Column("reason_sealed", sa.LargeBinary, nullable=False),
    sa.Column("added_by", sa.String(128), nullable=False),
    sa.Column("added_at", UTCDateTime(), nullable=False),
)

#: Per principal and day: distinct subjects touched and accesses by hour (baselines).
monitor_days = sa.Table(
    "monitor_days",
    metadata,
    sa.Column("principal_id", sa.String(128), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("role", sa.String(64), nullable=False),
    sa.Column("subjects", sa.Integer, nullable=False),
    #: JSON list of 24 access counts by local hour.
    sa.Column("hours", sa.Text, nullable=False),
    sa.Index("ix_monitor_days_role_day", "role", "day"),
)

#: Alerts waiting to go out on a channel (webhook, syslog, email), retried with backoff.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), nullable=False, index=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("failed_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.String(200), nullable=True),
    sa.Index("ix_alert_deliveries_due", "delivered_at", "next_at"),
)

# -- incidents ----------------------------------------------------------------------------------

#: The incident register. Title and description are free text that may name people: sealed.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("title_sealed", sa.LargeBinary, nullable=False),
    sa.Column("description_sealed", sa.LargeBinary, nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("discovered_at", UTCDateTime(), nullable=False),
    sa.Column("determined_at", UTCDateTime(), nullable=True),
    sa.Column("extortion_paid_at", UTCDateTime(), nullable=True),
    #: JSON: the compromised principals, window, collections, keys_compromised.
    sa.Column("scope", sa.Text, nullable=True),
    #: JSON: what the scope computed (counts, classifications, jurisdictions, checkpoint).
    sa.Column("scope_result", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("closed_at", UTCDateTime(), nullable=True),
)

incident_alerts = sa.Table(
    "incident_alerts",
    metadata,
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), primary_key=True),
    sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), primary_key=True, unique=True),
)

#: Every step of an incident, in order; notes sealed.
incident_timeline = sa.Table(
    "incident_timeline",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
    sa.Column("text_sealed", sa.LargeBinary, nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)

#: What the law asks of an incident: one row per rule that applies, with its clock.
incident_obligations = sa.Table(
    "incident_obligations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("regime", sa.String(32), nullable=False),
    sa.Column("recipient", sa.String(128), nullable=False),
    sa.Column("basis", sa.Text, nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=True, index=True),
    sa.Column("due_note", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    #: The rule's own reason (a safe harbour), or a person's recorded decision (sealed).
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("reason_sealed", sa.LargeBinary, nullable=True),
    sa.Column("filed_at", UTCDateTime(), nullable=True),
    sa.Column("reference", sa.String(200), nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.UniqueConstraint("incident_id", "rule_id", name="uq_incident_obligations_rule"),
)

#: Who an incident affected, as computed from the audit trail against one checkpoint.
incident_affected = sa.Table(
    "incident_affected",
    metadata,
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), primary_key=True),
    sa.Column("subject_id", ID, primary_key=True),
    #: decrypted | masked | ciphertext_only
    sa.Column("exposure", sa.String(16), nullable=False),
    sa.Column("jurisdiction", sa.String(8), nullable=False),
    #: Space-separated data classes exposed (not ciphertext-only).
    sa.Column("classifications", sa.Text, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    #: The first audit event that exposed the subject (its evidence), if any.
    sa.Column("event_id", ID, nullable=True),
)

#: Notification letters, rendered in batches.
letter_batches = sa.Table(
    "letter_batches",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("done", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    #: Where the batch's files and manifest are, under the data directory.
    sa.Column("path", sa.Text, nullable=False),
)


# --- Workforce: training (migration 0013) ---
#: Every graded assessment attempt (never the answers given): the evidence of training and
#: the count behind the attempt limit.
training_attempts = sa.Table(
    "training_attempts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("course", sa.String(64), nullable=False),
    sa.Column("course_version", sa.String(32), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("attempted_at", UTCDateTime(), nullable=False),
    sa.Index("ix_training_attempts_user_course", "user_id", "course", "attempted_at"),
    sa.Index("ix_training_attempts_attempted_at", "attempted_at"),
)

#: Reminders sent: one per (user, course, expiry, threshold), whichever process runs them.
training_reminders = sa.Table(
    "training_reminders",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("course", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Date, primary_key=True),
    sa.Column("threshold_days", sa.Integer, primary_key=True),
    sa.Column("sent_at", UTCDateTime(), nullable=False),
)


# --- Workforce: speak-up (migration 0014) ---

#: Speak-up cases (EU Directive 2019/1937). Text, category, identity and outcome are sealed
#: (``workforce.speakup``); times are UTC days, never the moment of intake; no address.
speakup_cases = sa.Table(
    "speakup_cases",
    metadata,
    sa.Column("id", ID, primary_key=True),
    #: Argon2id of the receipt under a keyed salt: the case is found from the receipt alone.
    sa.Column("receipt_index", sa.String(64), nullable=False, unique=True),
    #: The KDF parameters the index was computed with (``argon2id$t=3$m=65536$p=1``).
    sa.Column("kdf", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("received_on", UTCDateTime(), nullable=False),
    sa.Column("acknowledge_by", UTCDateTime(), nullable=False),
    sa.Column("feedback_by", UTCDateTime(), nullable=False),
    sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
    sa.Column("feedback_at", UTCDateTime(), nullable=True),
    sa.Column("closed_at", UTCDateTime(), nullable=True),
    sa.Column("report_sealed", sa.LargeBinary, nullable=False),
    sa.Column("category_sealed", sa.LargeBinary, nullable=True),
    sa.Column("identity_sealed", sa.LargeBinary, nullable=True),
    sa.Column("outcome_sealed", sa.LargeBinary, nullable=True),
    #: Intake is audited in a later batch, once its day is over (no event at its moment).
    sa.Column("audited", sa.Boolean, nullable=False),
)

#: The thread between reporter and handlers; ``seq`` orders it, ``sent_on`` is a UTC day.
speakup_messages = sa.Table(
    "speakup_messages",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("case_id", ID, sa.ForeignKey("speakup_cases.id"), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("author", sa.String(16), nullable=False),  # reporter | handler
    sa.Column("text_sealed", sa.LargeBinary, nullable=False),
    sa.Column("sent_on", UTCDateTime(), nullable=False),
    sa.Column("audited", sa.Boolean, nullable=False),
)

#: The retaliation watch's ethics-only queue: what happened is sealed (it names the reporter).
speakup_alerts = sa.Table(
    "speakup_alerts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("case_id", ID, sa.ForeignKey("speakup_cases.id"), nullable=False, index=True),
    #: Keyed digest of (case, audit event): one alert per event, however often it is read.
    sa.Column("dedup_key", sa.String(64), nullable=False, unique=True),
    sa.Column("raised_on", UTCDateTime(), nullable=False),
    sa.Column("details_sealed", sa.LargeBinary, nullable=False),
)



# --- Workforce: access review campaigns and HR sync (migration 0015) ---

#: An access review campaign (NYDFS 500.7(a)(4)): every entitlement of the accounts in scope,
#: snapshotted as items when it opens.
review_campaigns = sa.Table(
    "review_campaigns",
    metadata,
    sa.Column("id", ID, primary_key=True),
    #: ``all`` or ``role:NAME``.
    sa.Column("scope", sa.String(80), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # open | complete
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
)

#: One entitlement of one account in a campaign, its reviewer and the decision.
review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("campaign_id", ID, sa.ForeignKey("review_campaigns.id"), nullable=False,
              index=True),
    sa.Column("account_kind", sa.String(16), nullable=False),  # user | api_key
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("account_name", sa.String(128), nullable=False),
    #: role | region | assignment | api_key
    sa.Column("kind", sa.String(16), nullable=False),
    #: The role or region name, ``collection/record id`` of an assignment, or the key's id.
    sa.Column("entitlement", sa.String(128), nullable=False),
    #: JSON: the context the reviewer decides on (last use, MFA, training, scopes, field).
    sa.Column("context", sa.Text, nullable=False, server_default="{}"),
    #: The manager's user id; null: the pool of ``reviewer_role`` holders decides.
    sa.Column("reviewer_id", ID, nullable=True, index=True),
    sa.Column("reviewer_role", sa.String(64), nullable=True),
    sa.Column("decision", sa.String(8), nullable=True),  # keep | revoke
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    #: The reviewer's note, sealed (it may name people); the trail keeps a digest.
    sa.Column("note_sealed", sa.LargeBinary, nullable=True),
    #: What a revocation did (``role removed``, ``key revoked``, ``already gone``…).
    sa.Column("effect", sa.String(64), nullable=True),
)


# --- Compliance: control results and attestations (migration 0016) ---

#: Each run of a control (``fiduciary.compliance.posture``): its status and the facts behind
#: it (staff usernames and counts, never a customer value), kept as the posture's history.
control_results = sa.Table(
    "control_results",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    #: One id per run of the whole catalogue.
    sa.Column("run_id", ID, nullable=False, index=True),
    sa.Column("control_id", sa.String(64), nullable=False),
    #: Title and sections as the catalogue said at the time (it may change later).
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("sections", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("facts", sa.Text, nullable=False),
    #: Space-separated audit event ids the facts rest on.
    sa.Column("event_ids", sa.Text, nullable=False, server_default=""),
    sa.Column("checked_at", UTCDateTime(), nullable=False, index=True),
    sa.Index("ix_control_results_control_checked", "control_id", "checked_at"),
)

#: A named person vouches for a document Fiduciary does not hold (incident response plan,
#: risk assessment, asset inventory); the control passes until ``document_date + every_days``.
compliance_attestations = sa.Table(
    "compliance_attestations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("control_id", sa.String(64), nullable=False, index=True),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("document_date", sa.Date, nullable=False),
    sa.Column("attested_by", sa.String(128), nullable=False),
    #: Who recorded it (the caller), and when.
    sa.Column("recorded_by", sa.String(128), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    #: The audit event that recorded it (the evidence pack proves it).
    sa.Column("event_id", ID, nullable=False),
)


# --- Compliance: filings (migration 0017) ---

#: Drafts of the annual filings (NYDFS 500.17(b)), kept five years after the later of their
#: creation and the due date (500.17(b)(2)).
compliance_filings = sa.Table(
    "compliance_filings",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),  # nydfs_500_17b
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),  # certification | acknowledgment
    #: The draft as canonical JSON (controls, failing sections, facts; no customer value).
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("retain_until", UTCDateTime(), nullable=False, index=True),
    sa.Index("ix_compliance_filings_kind_year", "kind", "year"),
)


# --- Authentication cache and workers (migration 0018) ---

#: One row (id 1): a counter that triggers raise with every change a cached principal
#: depends on (``fiduciary.access.authcache``); triggers are defined in the migration.
auth_generation = sa.Table(
    "auth_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

#: Who runs a piece of singleton work (``fiduciary.storage.lease``): the holder renews its
#: row before ``expires_at`` (seconds since the epoch); another process takes an expired one.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
