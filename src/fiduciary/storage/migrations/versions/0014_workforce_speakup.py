"""Speak-up: sealed anonymous reports, their threads and case handling, and the retaliation
watch's ethics-only alert queue.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "speakup_cases",
        sa.Column("id", ID, primary_key=True),
        sa.Column("receipt_index", sa.String(64), nullable=False, unique=True),
        sa.Column("kdf", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("received_on", TS, nullable=False),
        sa.Column("acknowledge_by", TS, nullable=False),
        sa.Column("feedback_by", TS, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("feedback_at", TS, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("report_sealed", sa.LargeBinary, nullable=False),
        sa.Column("category_sealed", sa.LargeBinary, nullable=True),
        sa.Column("identity_sealed", sa.LargeBinary, nullable=True),
        sa.Column("outcome_sealed", sa.LargeBinary, nullable=True),
        sa.Column("audited", sa.Boolean, nullable=False),
    )
    op.create_table(
        "speakup_messages",
        sa.Column("id", ID, primary_key=True),
        sa.Column("case_id", ID, sa.ForeignKey("speakup_cases.id"), nullable=False,
                  index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("author", sa.String(16), nullable=False),
        sa.Column("text_sealed", sa.LargeBinary, nullable=False),
        sa.Column("sent_on", TS, nullable=False),
        sa.Column("audited", sa.Boolean, nullable=False),
    )
    op.create_table(
        "speakup_alerts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("case_id", ID, sa.ForeignKey("speakup_cases.id"), nullable=False,
                  index=True),
        sa.Column("dedup_key", sa.String(64), nullable=False, unique=True),
        sa.Column("raised_on", TS, nullable=False),
        sa.Column("details_sealed", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("speakup_alerts")
    op.drop_table("speakup_messages")
    op.drop_table("speakup_cases")
