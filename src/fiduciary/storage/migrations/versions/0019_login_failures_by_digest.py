"""Login failure counters keyed by a keyed digest of the typed username, not the text.

What was typed as a username may be a password typed in the wrong field; the counters now
hold only a digest (``UserService._failure_key``). Existing rows hold typed text and cannot be
re-keyed here (the key lives in the keyring, not the database): they are deleted, which
restarts every failure count once, at the upgrade.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-26
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM login_failures")


def downgrade() -> None:
    op.execute("DELETE FROM login_failures")
