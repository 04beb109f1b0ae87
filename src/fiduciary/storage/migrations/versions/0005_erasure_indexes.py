"""Indexes the erasure clean-up and the retention job scan by: blind-index entries by subject,
subjects by status.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_blind_index_subject_id", "blind_index", ["subject_id"])
    op.create_index("ix_subjects_status", "subjects", ["status"])


def downgrade() -> None:
    op.drop_index("ix_subjects_status", "subjects")
    op.drop_index("ix_blind_index_subject_id", "blind_index")
