"""Initial schema: users, stores, items, tags, their links, revoked tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade():
    op.create_table(
        "revoked_tokens",
        sa.Column("key", sa.String(64), nullable=False),
        timestamp("expires_at"),
        sa.PrimaryKeyConstraint("key", name="pk_revoked_tokens"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_key", sa.String(32), nullable=False),
        timestamp("created_at"),
        # op.f(): the names are final; the naming convention must not prefix them again.
        sa.CheckConstraint("role IN ('user', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "stores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("contact_email", sa.String(254), nullable=True),
        sa.Column("contact_phone", sa.String(32), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_stores_owner_id_users", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stores"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_stores_created_at", "stores", ["created_at"])
    op.create_index("ix_stores_owner_id", "stores", ["owner_id"])
    op.create_index("uq_stores_name_lower", "stores", [sa.text("lower(name)")], unique=True)

    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("description", sa.String(2000), nullable=True),
        sa.Column("price", sa.Numeric(12, 2), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.CheckConstraint("price >= 0", name=op.f("ck_items_price_not_negative")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name="fk_items_store_id_stores", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_items_created_at", "items", ["created_at"])
    op.create_index("ix_items_price", "items", ["price"])
    op.create_index("ix_items_name_lower", "items", [sa.text("lower(name)")])
    op.create_index(
        "uq_items_store_id_name_lower", "items", ["store_id", sa.text("lower(name)")], unique=True
    )

    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name="fk_tags_store_id_stores", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tags_name_lower", "tags", [sa.text("lower(name)")])
    op.create_index(
        "uq_tags_store_id_name_lower", "tags", ["store_id", sa.text("lower(name)")], unique=True
    )

    op.create_table(
        "item_tags",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_item_tags_item_id_items", ondelete="CASCADE"
        ),
        # No ON DELETE: a tag still on an item cannot be deleted (the API answers 409).
        # Checked at commit, so that a store's cascades may remove links and tags in
        # any order.
        sa.ForeignKeyConstraint(
            ["tag_id"],
            ["tags.id"],
            name="fk_item_tags_tag_id_tags",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.PrimaryKeyConstraint("item_id", "tag_id", name="pk_item_tags"),
    )
    op.create_index("ix_item_tags_tag_id", "item_tags", ["tag_id"])


def downgrade():
    op.drop_table("item_tags")
    op.drop_table("tags")
    op.drop_table("items")
    op.drop_table("stores")
    op.drop_table("users")
    op.drop_table("revoked_tokens")
