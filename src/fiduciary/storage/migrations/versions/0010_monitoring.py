"""Monitoring: alerts and their triage, suppressions, the watch list, per-day baselines, the
delivery outbox; staff profiles link a user to their own customer record and surname digest.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("subject_id", ID, nullable=True))
        batch.add_column(sa.Column("surname_digest", sa.LargeBinary, nullable=True))
        batch.create_index("ix_users_subject_id", ["subject_id"])
    op.create_table(
        "alerts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("detection", sa.String(48), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("principal_kind", sa.String(16), nullable=False),
        sa.Column("principal_id", sa.String(128), nullable=True, index=True),
        sa.Column("principal_name", sa.String(128), nullable=True, index=True),
        sa.Column("subject_ids", sa.Text, nullable=False),
        sa.Column("event_ids", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False, server_default="{}"),
        sa.Column("dedup_key", sa.String(255), nullable=False, unique=True),
        sa.Column("assignee", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "alert_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), nullable=False, index=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("text_sealed", sa.LargeBinary, nullable=True),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "monitor_suppressions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("detection", sa.String(48), nullable=False),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("subject_id", ID, nullable=True),
        sa.Column("reason_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False, index=True),
    )
    op.create_table(
        "monitor_watchlist",
        sa.Column("subject_id", ID, primary_key=True),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("handlers", sa.Text, nullable=False, server_default="[]"),
        sa.Column("reason_sealed", sa.LargeBinary, nullable=False),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.Column("added_at", TS, nullable=False),
    )
    op.create_table(
        "monitor_days",
        sa.Column("principal_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("subjects", sa.Integer, nullable=False),
        sa.Column("hours", sa.Text, nullable=False),
    )
    op.create_index("ix_monitor_days_role_day", "monitor_days", ["role", "day"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), nullable=False, index=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("failed_at", TS, nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["delivered_at", "next_at"])


def downgrade() -> None:
    for table in ("alert_deliveries", "monitor_days", "monitor_watchlist",
                  "monitor_suppressions", "alert_actions", "alerts"):
        op.drop_table(table)
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_subject_id")
        batch.drop_column("surname_digest")
        batch.drop_column("subject_id")
