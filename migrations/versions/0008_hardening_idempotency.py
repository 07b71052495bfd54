"""Idempotency keys know their caller (a daily quota, §8), their claim (only the
claiming request records the answer) and the size of their answer; tag names lose
`|` (the CSV export joins tags with it, §4).

Revision ID: 0008_hardening
Revises: 0007_catalog_identity
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_hardening"
down_revision = "0007_catalog_identity"
branch_labels = None
depends_on = None


def _repair_tag_names():
    """`a|b` becomes `a/b`; where that name is taken in the store, the tag's id is
    added (`a/b 17`), and where that is taken too, a count after it (`a/b 17-2`), so
    no two tags of a store collide."""
    conn = op.get_bind()
    tags = sa.table(
        "tags", sa.column("id", sa.Integer), sa.column("name"), sa.column("store_id", sa.Integer)
    )
    rows = conn.execute(
        sa.select(tags.c.id, tags.c.name, tags.c.store_id).where(tags.c.name.contains("|"))
    ).all()

    def taken(store_id, tag_id, name):
        return (
            conn.execute(
                sa.select(tags.c.id).where(
                    tags.c.store_id == store_id,
                    sa.func.lower(tags.c.name) == sa.func.lower(name),
                    tags.c.id != tag_id,
                )
            ).first()
            is not None
        )

    for tag_id, name, store_id in rows:
        repaired = name.replace("|", "/")
        count = 1
        while taken(store_id, tag_id, repaired):
            suffix = f" {tag_id}" if count == 1 else f" {tag_id}-{count}"
            repaired = f"{name.replace('|', '/')[: 80 - len(suffix)]}{suffix}"
            count += 1
        conn.execute(sa.update(tags).where(tags.c.id == tag_id).values(name=repaired))


def upgrade():
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("claim", sa.String(32), nullable=True))
        batch.add_column(sa.Column("size", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_idempotency_keys_owner_created_at", ["owner", "created_at"])
    _repair_tag_names()


def downgrade():
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_index("ix_idempotency_keys_owner_created_at")
        batch.drop_column("size")
        batch.drop_column("claim")
        batch.drop_column("owner")
