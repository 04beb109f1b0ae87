"""Break-glass review outcome: a second person closes each grant as justified or not.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("break_glass_grants") as batch:
        batch.add_column(sa.Column("review_outcome", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("break_glass_grants") as batch:
        batch.drop_column("review_outcome")
