"""Store operations: items' stock and its ledger, remembered idempotent answers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade():
    # Existing items start at 0, with no movements: the sum of none is 0.
    if op.get_bind().dialect.name == "sqlite":
        # In place: batch mode would copy the table and lose its expression indexes,
        # which SQLite cannot reflect. A CHECK on the new column itself is allowed.
        op.execute(
            "ALTER TABLE items ADD COLUMN stock INTEGER DEFAULT '0' NOT NULL "
            "CONSTRAINT ck_items_stock_not_negative CHECK (stock >= 0)"
        )
    else:
        op.add_column("items", sa.Column("stock", sa.Integer(), server_default="0", nullable=False))
        op.create_check_constraint(op.f("ck_items_stock_not_negative"), "items", "stock >= 0")
    op.create_index("ix_items_stock_id", "items", ["stock", "id"])
    op.create_index("ix_items_store_id_stock_id", "items", ["store_id", "stock", "id"])

    op.create_table(
        "stock_movements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("stock_after", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(100), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        timestamp("created_at"),
        sa.CheckConstraint(
            "reason IN ('received', 'sale', 'return', 'damaged', 'correction', 'count')",
            name=op.f("ck_stock_movements_reason"),
        ),
        sa.CheckConstraint(
            "stock_after >= 0", name=op.f("ck_stock_movements_stock_after_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_stock_movements_item_id_items", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_stock_movements_user_id_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stock_movements"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_stock_movements_item_id_id", "stock_movements", ["item_id", "id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        timestamp("created_at"),
        timestamp("expires_at"),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade():
    op.drop_table("idempotency_keys")
    op.drop_table("stock_movements")
    op.drop_index("ix_items_store_id_stock_id", table_name="items")
    op.drop_index("ix_items_stock_id", table_name="items")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_items_stock_not_negative"), "items", type_="check")
    # SQLite drops the column's own CHECK with it.
    op.drop_column("items", "stock")
