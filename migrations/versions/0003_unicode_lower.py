"""SQLite: rebuild the case-insensitive indexes with the Unicode-aware lower().

db.py gives every SQLite connection a ``lower`` that folds every letter, where
SQLite's own folded ASCII only. Index entries made before (``lower(name)`` of
"ÄPFEL" was "ÄPFEL") would disagree with the new function: REINDEX recomputes
them (it stops on two names that only Unicode folding makes equal: rename one
first). PostgreSQL's indexes are unchanged.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        op.execute("REINDEX")


def downgrade():
    # The indexes follow whichever lower() the connection has; nothing to undo.
    pass
