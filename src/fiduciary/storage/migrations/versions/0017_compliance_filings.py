"""Compliance filings: NYDFS certifications kept five years.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "compliance_filings",
        sa.Column("id", ID, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("retain_until", TS, nullable=False),
    )
    op.create_index("ix_compliance_filings_retain_until", "compliance_filings",
                    ["retain_until"])
    op.create_index("ix_compliance_filings_kind_year", "compliance_filings", ["kind", "year"])


def downgrade() -> None:
    op.drop_index("ix_compliance_filings_kind_year", "compliance_filings")
    op.drop_index("ix_compliance_filings_retain_until", "compliance_filings")
    op.drop_table("compliance_filings")
