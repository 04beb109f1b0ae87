"""Incidents: the register, linked alerts, timeline, obligations with their clocks, the
affected subjects computed from the audit trail, letter batches.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", ID, primary_key=True),
        sa.Column("title_sealed", sa.LargeBinary, nullable=False),
        sa.Column("description_sealed", sa.LargeBinary, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("discovered_at", TS, nullable=False),
        sa.Column("determined_at", TS, nullable=True),
        sa.Column("extortion_paid_at", TS, nullable=True),
        sa.Column("scope", sa.Text, nullable=True),
        sa.Column("scope_result", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
    )
    op.create_table(
        "incident_alerts",
        sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), primary_key=True),
        sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), primary_key=True, unique=True),
    )
    op.create_table(
        "incident_timeline",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("details", sa.Text, nullable=False, server_default="{}"),
        sa.Column("text_sealed", sa.LargeBinary, nullable=True),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "incident_obligations",
        sa.Column("id", ID, primary_key=True),
        sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("due_at", TS, nullable=True, index=True),
        sa.Column("due_note", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("reason_sealed", sa.LargeBinary, nullable=True),
        sa.Column("filed_at", TS, nullable=True),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.UniqueConstraint("incident_id", "rule_id", name="uq_incident_obligations_rule"),
    )
    op.create_table(
        "incident_affected",
        sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), primary_key=True),
        sa.Column("subject_id", ID, primary_key=True),
        sa.Column("exposure", sa.String(16), nullable=False),
        sa.Column("jurisdiction", sa.String(8), nullable=False),
        sa.Column("classifications", sa.Text, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("event_id", ID, nullable=True),
    )
    op.create_table(
        "letter_batches",
        sa.Column("id", ID, primary_key=True),
        sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("path", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("letter_batches", "incident_affected", "incident_obligations",
                  "incident_timeline", "incident_alerts", "incidents"):
        op.drop_table(table)
