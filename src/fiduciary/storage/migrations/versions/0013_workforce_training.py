"""Training: course attempts, versions and evidence of completions.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID = sa.String(36)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Completions recorded before versions keep a null version: counted as the current one
    # until they expire (no refresher demanded of everyone on upgrade).
    with op.batch_alter_table("training_records") as batch:
        batch.add_column(sa.Column("course_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("evidence", sa.String(256), nullable=True))
    op.create_table(
        "training_attempts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("course_version", sa.String(32), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("attempted_at", TS, nullable=False),
    )
    op.create_index("ix_training_attempts_user_course", "training_attempts",
                    ["user_id", "course", "attempted_at"])
    op.create_index("ix_training_attempts_attempted_at", "training_attempts", ["attempted_at"])
    op.create_table(
        "training_reminders",
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("course", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Date, primary_key=True),
        sa.Column("threshold_days", sa.Integer, primary_key=True),
        sa.Column("sent_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("training_reminders")
    op.drop_index("ix_training_attempts_attempted_at", "training_attempts")
    op.drop_index("ix_training_attempts_user_course", "training_attempts")
    op.drop_table("training_attempts")
    with op.batch_alter_table("training_records") as batch:
        batch.drop_column("evidence")
        batch.drop_column("source")
        batch.drop_column("course_version")
