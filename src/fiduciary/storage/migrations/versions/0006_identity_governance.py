"""Identity governance: approvals (separation of duties for data roles), one-time enrolment
codes, API keys waiting for approval.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.String(36)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("approval_id", ID, nullable=True))
    op.create_table(
        "approvals",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("proposed_by_kind", sa.String(16), nullable=False),
        sa.Column("proposed_by_id", sa.String(128), nullable=False),
        sa.Column("proposed_by_name", sa.String(128), nullable=False),
        sa.Column("proposed_at", TS, nullable=False),
        sa.Column("decided_by_kind", sa.String(16), nullable=True),
        sa.Column("decided_by_id", sa.String(128), nullable=True),
        sa.Column("decided_by_name", sa.String(128), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
    )
    op.create_index("ix_approvals_status", "approvals", ["status"])
    op.create_table(
        "enrolments",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("code_hash", sa.LargeBinary, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("issued_at", TS, nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_enrolments"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_enrolments_user_id"),
    )


def downgrade() -> None:
    op.drop_table("enrolments")
    op.drop_index("ix_approvals_status", "approvals")
    op.drop_table("approvals")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("approval_id")
