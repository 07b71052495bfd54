"""One index on a store's item names: the unique (store_id, lower(name)) also serves
`sort=name` within a store, so (store_id, lower(name), id) goes. A name is unique in
its store, so the id never breaks a tie there; the page reads the unique index in name
order (an incremental sort by id over groups of one row), and every insert of an item
maintains one index fewer (issue 19: the CSV import).

Revision ID: 0013_one_store_name_index
Revises: 0012_api_keys
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_one_store_name_index"
down_revision = "0012_api_keys"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index("ix_items_store_id_name_lower_id", "items")


def downgrade():
    op.create_index(
        "ix_items_store_id_name_lower_id", "items", ["store_id", sa.text("lower(name)"), "id"]
    )
