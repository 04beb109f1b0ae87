"""A principal's events in leaf order (an incident's scope pages through them): index them so,
or a busy API key's whole history is read and sorted again for every page.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_actor_leaf", "audit_events", ["actor", "leaf_index"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_actor_leaf", "audit_events")
