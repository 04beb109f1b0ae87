"""Drop ``ix_audit_events_actor``: ``ix_audit_events_actor_leaf`` (actor, leaf_index) answers
every query by actor as well, and each index is one more page every audited read writes.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-27
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_audit_events_actor", "audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"])
