"""Relationship lookups read one subject's records of one collection: index them so, or
SQLite scans every record of the collection on each decision.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_subject_collection", "records", ["subject_id", "collection"])


def downgrade() -> None:
    op.drop_index("ix_records_subject_collection", "records")
