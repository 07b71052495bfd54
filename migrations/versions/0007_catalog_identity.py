"""Catalog identity and sync (§13): items gain `sku`, `status`, `low_stock_threshold`
and `metadata`; stores gain `metadata`; tags gain `created_at` and `updated_at`;
indexes for `?sku=`, `status=` and sort=updated_at; and, on PostgreSQL, triggers
that keep `updated_at` for rows changed by plain SQL. Rows already there become
active items with no SKU and empty metadata; tags get the time of the upgrade.

Revision ID: 0007_catalog_identity
Revises: 0006_jobs
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_catalog_identity"
down_revision = "0006_jobs"
branch_labels = None
depends_on = None

STATUS_CHECK = "status IN ('active', 'draft', 'archived')"
THRESHOLD_CHECK = "low_stock_threshold >= 0"
NOT_ACTIVE = "status <> 'active'"

# name -> (table, columns)
INDEXES = {
    "uq_items_sku_store_id": ("items", ["sku", "store_id"]),
    "ix_items_updated_at_id": ("items", ["updated_at", "id"]),
    "ix_items_store_id_updated_at_id": ("items", ["store_id", "updated_at", "id"]),
    "ix_stores_updated_at_id": ("stores", ["updated_at", "id"]),
    "ix_tags_store_id_updated_at_id": ("tags", ["store_id", "updated_at", "id"]),
}

# As in models/item.py (TOUCH_TRIGGERS).
TRIGGERS = (
    """CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
    NEW.updated_at := clock_timestamp();
  END IF;
  RETURN NEW;
END $$""",
    """CREATE OR REPLACE FUNCTION touch_linked_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE items SET updated_at = clock_timestamp()
  WHERE id IN (SELECT item_id FROM links) AND updated_at < now();
  RETURN NULL;
END $$""",
    *(
        f"CREATE TRIGGER {table}_touch BEFORE UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION touch_updated_at()"
        for table in ("stores", "items", "tags")
    ),
    "CREATE TRIGGER item_tags_touch_insert AFTER INSERT ON item_tags "
    "REFERENCING NEW TABLE AS links FOR EACH STATEMENT EXECUTE FUNCTION touch_linked_items()",
    "CREATE TRIGGER item_tags_touch_delete AFTER DELETE ON item_tags "
    "REFERENCING OLD TABLE AS links FOR EACH STATEMENT EXECUTE FUNCTION touch_linked_items()",
)
DROP_TRIGGERS = (
    *(f"DROP TRIGGER {table}_touch ON {table}" for table in ("stores", "items", "tags")),
    "DROP TRIGGER item_tags_touch_insert ON item_tags",
    "DROP TRIGGER item_tags_touch_delete ON item_tags",
    "DROP FUNCTION touch_linked_items()",
    "DROP FUNCTION touch_updated_at()",
)


def _json():
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade():
    pg = op.get_bind().dialect.name == "postgresql"
    op.add_column("items", sa.Column("sku", sa.String(64), nullable=True))
    if pg:
        op.add_column(
            "items",
            sa.Column("status", sa.String(16), server_default="active", nullable=False),
        )
        op.add_column("items", sa.Column("low_stock_threshold", sa.Integer(), nullable=True))
        op.create_check_constraint(op.f("ck_items_status"), "items", STATUS_CHECK)
        op.create_check_constraint(
            op.f("ck_items_low_stock_threshold_not_negative"), "items", THRESHOLD_CHECK
        )
    else:
        # SQLite adds a column with its CHECK constraint, never a constraint alone.
        op.execute(
            "ALTER TABLE items ADD COLUMN status VARCHAR(16) DEFAULT 'active' NOT NULL "
            f"CONSTRAINT ck_items_status CHECK ({STATUS_CHECK})"
        )
        op.execute(
            "ALTER TABLE items ADD COLUMN low_stock_threshold INTEGER "
            f"CONSTRAINT ck_items_low_stock_threshold_not_negative CHECK ({THRESHOLD_CHECK})"
        )
    for table in ("items", "stores"):
        op.add_column(
            table,
            sa.Column("metadata", _json(), server_default=sa.text("'{}'"), nullable=False),
        )
    # SQLite adds a NOT NULL column only with a constant default: the rows there are
    # then given the time of the upgrade, as PostgreSQL's now() gives them.
    default = sa.func.now() if pg else sa.text("'1970-01-01 00:00:00.000000'")
    for column in ("created_at", "updated_at"):
        op.add_column(
            "tags",
            sa.Column(column, sa.DateTime(timezone=True), server_default=default, nullable=False),
        )
    if not pg:
        op.execute("UPDATE tags SET created_at = strftime('%Y-%m-%d %H:%M:%f000', 'now')")
        op.execute("UPDATE tags SET updated_at = created_at")
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=name.startswith("uq_"))
    # Only the rows that are not active (`status=draft|archived`), as in models/item.py.
    op.create_index(
        "ix_items_status_id",
        "items",
        ["status", "id"],
        postgresql_where=sa.text(NOT_ACTIVE),
        sqlite_where=sa.text(NOT_ACTIVE),
    )
    if pg:
        for statement in TRIGGERS:
            op.execute(statement)


def downgrade():
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        for statement in DROP_TRIGGERS:
            op.execute(statement)
    op.drop_index("ix_items_status_id", "items")
    for name, (table, _columns) in INDEXES.items():
        op.drop_index(name, table)
    for column in ("created_at", "updated_at"):
        op.drop_column("tags", column)
    for table in ("items", "stores"):
        op.drop_column(table, "metadata")
    if pg:
        op.drop_constraint(op.f("ck_items_low_stock_threshold_not_negative"), "items")
        op.drop_constraint(op.f("ck_items_status"), "items")
    for column in ("low_stock_threshold", "status", "sku"):
        op.drop_column("items", column)
