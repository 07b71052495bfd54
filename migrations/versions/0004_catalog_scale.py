"""Catalog scale: an index for every sort (with the id tie-break, also within a
store), tag links by tag, trigram indexes for `q` and a weighted full-text document
for `search` (PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# As in models/item.py (SearchDocument): name weighs more than description.
SEARCH_DOCUMENT = (
    "setweight(to_tsvector('english', name), 'A') || "
    "setweight(to_tsvector('english', coalesce(description, '')), 'B')"
)

# name -> columns: every sort of a list of items, over all items and within a store.
SORT_INDEXES = {
    "ix_items_name_lower_id": [sa.text("lower(name)"), "id"],
    "ix_items_price_id": ["price", "id"],
    "ix_items_created_at_id": ["created_at", "id"],
    "ix_items_store_id_id": ["store_id", "id"],
    "ix_items_store_id_name_lower_id": ["store_id", sa.text("lower(name)"), "id"],
    "ix_items_store_id_price_id": ["store_id", "price", "id"],
    "ix_items_store_id_created_at_id": ["store_id", "created_at", "id"],
}
REPLACED = {
    "ix_items_name_lower": [sa.text("lower(name)")],
    "ix_items_price": ["price"],
    "ix_items_created_at": ["created_at"],
}


def upgrade():
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, columns in SORT_INDEXES.items():
        op.create_index(name, "items", columns)
    for name in REPLACED:
        op.drop_index(name, "items")
    op.create_index("ix_item_tags_tag_id_item_id", "item_tags", ["tag_id", "item_id"])
    op.drop_index("ix_item_tags_tag_id", "item_tags")
    if postgresql:
        # Derived from the row by the database, so bulk loads in SQL get it too.
        op.add_column(
            "items",
            sa.Column(
                "search_vector",
                TSVECTOR(),
                sa.Computed(SEARCH_DOCUMENT, persisted=True),
                nullable=True,
            ),
        )
        op.create_index(
            "ix_items_search_vector", "items", ["search_vector"], postgresql_using="gin"
        )
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for column in ("name", "description"):
            op.execute(
                f"CREATE INDEX ix_items_{column}_trgm ON items "
                f"USING gin (lower({column}) gin_trgm_ops)"
            )
    else:
        # SQLite searches by substring: the column is there, and empty. (SQLite can
        # add only a VIRTUAL generated column; a NULL is the same either way.)
        op.add_column(
            "items",
            sa.Column(
                "search_vector", sa.String(), sa.Computed("NULL", persisted=False), nullable=True
            ),
        )


def downgrade():
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        for name in ("ix_items_name_trgm", "ix_items_description_trgm", "ix_items_search_vector"):
            op.drop_index(name, "items")
        # pg_trgm stays: other databases' objects may use it too.
    op.drop_column("items", "search_vector")
    op.create_index("ix_item_tags_tag_id", "item_tags", ["tag_id"])
    op.drop_index("ix_item_tags_tag_id_item_id", "item_tags")
    for name, columns in REPLACED.items():
        op.create_index(name, "items", columns)
    for name in SORT_INDEXES:
        op.drop_index(name, "items")
