"""Authentication cache generation and leases for ``serve --workers N``.

``auth_generation`` holds one counter that triggers raise in the same transaction as any
change a cached principal depends on (a session or key revoked, a user disabled, roles,
password, training or break-glass changed): every worker compares it before trusting its
cache, whichever process or code path made the change. ``leases`` elects the one process
that runs the background work (audit sequencer, schedulers).

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

#: table -> (the events that change what a principal is built from).
WATCHED = {
    "users": "UPDATE OF username, password_hash, must_change_password, roles, regions, "
             "disabled_at, created_at OR DELETE",
    "sessions": "UPDATE OF revoked_at, expires_at, user_id OR DELETE",
    "api_keys": "UPDATE OF name, role, secret_hash, expires_at, revoked_at, scopes, "
                "approval_id OR DELETE",
    "training_records": "INSERT OR UPDATE OR DELETE",
    "break_glass_grants": "INSERT OR UPDATE OF user_id, subject_ids, expires_at OR DELETE",
}
_BUMP = "UPDATE auth_generation SET generation = generation + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "auth_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO auth_generation (id, generation) VALUES (1, 0)")
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The schema it is created in, whatever search path the changing session has.
        op.execute("CREATE FUNCTION fiduciary_auth_changed() RETURNS trigger "
                   "LANGUAGE plpgsql SET search_path FROM CURRENT "
                   f"AS $$ BEGIN {_BUMP}; RETURN NULL; END $$")
        for table, events in WATCHED.items():
            op.execute(f"CREATE TRIGGER tr_auth_{table} AFTER {events} ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION fiduciary_auth_changed()")
    else:
        # SQLite: one trigger per event (and per row).
        for table, events in WATCHED.items():
            for n, event in enumerate(events.split(" OR ")):
                op.execute(f"CREATE TRIGGER tr_auth_{table}_{n} AFTER {event} ON {table} "
                           f"BEGIN {_BUMP}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER tr_auth_{table} ON {table}")
        op.execute("DROP FUNCTION fiduciary_auth_changed()")
    else:
        for table, events in WATCHED.items():
            for n in range(len(events.split(" OR "))):
                op.execute(f"DROP TRIGGER tr_auth_{table}_{n}")
    op.drop_table("leases")
    op.drop_table("auth_generation")
