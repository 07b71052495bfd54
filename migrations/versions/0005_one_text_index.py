"""`q` on one trigram index over the name and the description together (PostgreSQL):
a trigram found in every row is read once, where the two indexes it replaces read it
twice and then combined their matches.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As in models/item.py (ITEM_TEXT): chr(31) is a character `q` cannot contain.
TEXT_INDEX = (
    "CREATE INDEX ix_items_text_trgm ON items "
    "USING gin (lower((name || chr(31)) || coalesce(description, '')) gin_trgm_ops)"
)
COLUMN_INDEXES = ("ix_items_name_trgm", "ix_items_description_trgm")


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no trigram index: `q` scans there.
    op.execute(TEXT_INDEX)
    for name in COLUMN_INDEXES:
        op.drop_index(name, "items")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in ("name", "description"):
        op.execute(
            f"CREATE INDEX ix_items_{column}_trgm ON items USING gin (lower({column}) gin_trgm_ops)"
        )
    op.drop_index("ix_items_text_trgm", "items")
