"""Record write versions: ``records.version`` (1 on create, +1 on each update), bound into the
associated data of every field the write seals. Existing rows get 0: their fields keep the
associated data they were sealed with and are read as before until their next update.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    # Fields sealed at a version >= 1 do not open for code from before this revision.
    with op.batch_alter_table("records") as batch:
        batch.drop_column("version")
