"""Compliance posture: control results and their history, attestations.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "control_results",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("run_id", ID, nullable=False, index=True),
        sa.Column("control_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("sections", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("event_ids", sa.Text, nullable=False, server_default=""),
        sa.Column("checked_at", TS, nullable=False, index=True),
    )
    op.create_index("ix_control_results_control_checked", "control_results",
                    ["control_id", "checked_at"])
    op.create_table(
        "compliance_attestations",
        sa.Column("id", ID, primary_key=True),
        sa.Column("control_id", sa.String(64), nullable=False, index=True),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("document_date", sa.Date, nullable=False),
        sa.Column("attested_by", sa.String(128), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("event_id", ID, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("compliance_attestations")
    op.drop_index("ix_control_results_control_checked", "control_results")
    op.drop_table("control_results")
