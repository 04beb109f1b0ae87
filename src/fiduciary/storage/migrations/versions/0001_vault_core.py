"""Vault core: subjects, subject keys, records, blind index, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subjects"),
    )
    op.create_table(
        "subject_keys",
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("kek_version", sa.Integer, nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("subject_id", name="pk_subject_keys"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"],
                                name="fk_subject_keys_subject_id"),
    )
    op.create_index("ix_subject_keys_kek_version", "subject_keys", ["kek_version"])
    op.create_table(
        "records",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("clear", sa.Text, nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_records"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_records_subject_id"),
    )
    op.create_index("ix_records_subject_id", "records", ["subject_id"])
    op.create_index("ix_records_collection", "records", ["collection"])
    op.create_table(
        "blind_index",
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("digest", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("record_id", "field", name="pk_blind_index"),
        sa.ForeignKeyConstraint(["record_id"], ["records.id"], ondelete="CASCADE",
                                name="fk_blind_index_record_id"),
    )
    op.create_index("ix_blind_index_digest", "blind_index", ["digest"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_blind_index_digest", "blind_index")
    op.drop_table("blind_index")
    op.drop_index("ix_records_collection", "records")
    op.drop_index("ix_records_subject_id", "records")
    op.drop_table("records")
    op.drop_index("ix_subject_keys_kek_version", "subject_keys")
    op.drop_table("subject_keys")
    op.drop_table("subjects")
