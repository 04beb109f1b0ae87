"""Access review campaigns, managers and the HR sync: users gain their manager and HR's
employee id, API keys the staff user they belong to; campaigns and their items.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("manager_id", ID, nullable=True))
        batch.add_column(sa.Column("employee_id", sa.String(64), nullable=True))
        batch.create_index("ix_users_manager_id", ["manager_id"])
        batch.create_unique_constraint("uq_users_employee_id", ["employee_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner_id", ID, nullable=True))
        batch.create_index("ix_api_keys_owner_id", ["owner_id"])
    op.create_table(
        "review_campaigns",
        sa.Column("id", ID, primary_key=True),
        sa.Column("scope", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
    )
    op.create_table(
        "review_items",
        sa.Column("id", ID, primary_key=True),
        sa.Column("campaign_id", ID, sa.ForeignKey("review_campaigns.id"), nullable=False,
                  index=True),
        sa.Column("account_kind", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False, index=True),
        sa.Column("account_name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entitlement", sa.String(128), nullable=False),
        sa.Column("context", sa.Text, nullable=False, server_default="{}"),
        sa.Column("reviewer_id", ID, nullable=True, index=True),
        sa.Column("reviewer_role", sa.String(64), nullable=True),
        sa.Column("decision", sa.String(8), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("note_sealed", sa.LargeBinary, nullable=True),
        sa.Column("effect", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("review_items")
    op.drop_table("review_campaigns")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_owner_id")
        batch.drop_column("owner_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_employee_id", type_="unique")
        batch.drop_index("ix_users_manager_id")
        batch.drop_column("employee_id")
        batch.drop_column("manager_id")
