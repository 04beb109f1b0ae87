"""Privacy operations: consent ledger, data-subject requests, legal holds, erasures; an index of
audit events by subject.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "audit_subjects",
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "event_id", name="pk_audit_subjects"),
    )
    # Index the events written before this revision.
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT event_id, subject_ids FROM audit_events "
                                "WHERE subject_ids <> ''")).all()
    pairs = [{"s": sid, "e": eid} for eid, ids in rows for sid in set(ids.split())]
    if pairs:
        conn.execute(sa.text("INSERT INTO audit_subjects (subject_id, event_id) "
                             "VALUES (:s, :e)"), pairs)
    op.create_table(
        "consent_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("notice_id", sa.String(128), nullable=True),
        sa.Column("notice_version", sa.String(64), nullable=True),
        sa.Column("method", sa.String(48), nullable=False),
        sa.Column("channel", sa.String(48), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consent_events"),
    )
    op.create_index("ix_consent_events_subject_purpose", "consent_events",
                    ["subject_id", "purpose", "recorded_at"])
    op.create_table(
        "dsr_requests",
        sa.Column("id", ID, nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("regime", sa.String(8), nullable=False),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("original_due_at", TS, nullable=False),
        sa.Column("acknowledge_by", TS, nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("extension_reason", sa.Text, nullable=True),
        sa.Column("verified_at", TS, nullable=True),
        sa.Column("verified_by", sa.String(128), nullable=True),
        sa.Column("verification_method", sa.String(64), nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("outcome_reason", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dsr_requests"),
    )
    for col in ("subject_id", "status", "due_at"):
        op.create_index(f"ix_dsr_requests_{col}", "dsr_requests", [col])
    op.create_table(
        "dsr_steps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("request_id", ID, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("details", sa.Text, server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dsr_steps"),
    )
    op.create_index("ix_dsr_steps_request_id", "dsr_steps", ["request_id"])
    op.create_table(
        "legal_holds",
        sa.Column("id", ID, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("released_at", TS, nullable=True),
        sa.Column("released_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_legal_holds"),
    )
    op.create_index("ix_legal_holds_target", "legal_holds", ["target"])
    op.create_table(
        "erasures",
        sa.Column("id", ID, nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("request_id", ID, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("certificate", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )
    op.create_index("ix_erasures_subject_id", "erasures", ["subject_id"])
    op.create_index("ix_erasures_status", "erasures", ["status"])


def downgrade() -> None:
    for table in ("erasures", "legal_holds", "dsr_steps", "dsr_requests", "consent_events",
                  "audit_subjects"):
        op.drop_table(table)
