"""Identity and access: users, sessions, MFA recovery codes, lockout, training, break-glass,
access reviews; subject attributes for policy conditions; API key scopes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.String(36)


def upgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("attributes", sa.Text, nullable=False, server_default="{}"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", sa.Text, nullable=True))
        batch.add_column(sa.Column("last_used_at", TS, nullable=True))
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("must_change_password", sa.Boolean, nullable=False),
        sa.Column("totp_sealed", sa.LargeBinary, nullable=False),
        sa.Column("totp_last_step", sa.BigInteger, nullable=True),
        sa.Column("mfa_enrolled_at", TS, nullable=True),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("regions", sa.Text, nullable=False, server_default="[]"),
        sa.Column("disabled_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("password_changed_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "login_failures",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.PrimaryKeyConstraint("username", name="pk_login_failures"),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("code_hash", sa.LargeBinary, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name="pk_recovery_codes"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_recovery_codes_user_id"),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_sessions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_sessions_user_id"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "training_records",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("course", sa.String(128), nullable=False),
        sa.Column("completed_at", sa.Date, nullable=False),
        sa.Column("expires_at", sa.Date, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_training_records"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_training_records_user_id"),
    )
    op.create_index("ix_training_records_user_id", "training_records", ["user_id"])
    op.create_table(
        "break_glass_grants",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("subject_ids", sa.Text, nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("reviewed_at", TS, nullable=True),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_break_glass_grants"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name="fk_break_glass_grants_user_id"),
    )
    op.create_index("ix_break_glass_grants_user_id", "break_glass_grants", ["user_id"])
    op.create_table(
        "break_glass_uses",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("grant_id", ID, nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("record_id", ID, nullable=True),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_break_glass_uses"),
        sa.ForeignKeyConstraint(["grant_id"], ["break_glass_grants.id"],
                                name="fk_break_glass_uses_grant_id"),
    )
    op.create_index("ix_break_glass_uses_grant_id", "break_glass_uses", ["grant_id"])
    op.create_table(
        "access_reviews",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("account_kind", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("account_name", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_reviews"),
    )
    op.create_index("ix_access_reviews_account_id", "access_reviews", ["account_id"])


def downgrade() -> None:
    for table in ("access_reviews", "break_glass_uses", "break_glass_grants",
                  "training_records", "sessions", "recovery_codes", "login_failures", "users"):
        op.drop_table(table)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("scopes")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("attributes")
