"""Jobs (§12): the jobs table, the files they read and write, and the mark a store
gets when a deletion job takes it (its name is free again at once).

Revision ID: 0006_jobs
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_jobs"
down_revision = "0005"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")


def timestamp(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade():
    # In place on SQLite too: batch mode would copy the table and lose its expression
    # indexes; a nullable column without a default is a plain ALTER TABLE there.
    op.add_column("stores", timestamp("deleted_at"))
    op.drop_index("uq_stores_name_lower", "stores")
    op.create_index(
        "uq_stores_name_lower",
        "stores",
        [sa.text("lower(name)")],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    deleting = sa.text("deleted_at IS NOT NULL")
    op.create_index(
        "ix_stores_deleting", "stores", ["id"], postgresql_where=deleting, sqlite_where=deleting
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        timestamp("created_at", nullable=False),
        timestamp("started_at"),
        timestamp("finished_at"),
        timestamp("heartbeat_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_jobs_user_id_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_user_id_id", "jobs", ["user_id", "id"])
    op.create_index("ix_jobs_status_heartbeat_at", "jobs", ["status", "heartbeat_at"])
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])

    op.create_table(
        "job_chunks",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_chunks_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "kind", "seq", name="pk_job_chunks"),
    )


def downgrade():
    op.drop_table("job_chunks")
    op.drop_table("jobs")
    op.drop_index("ix_stores_deleting", "stores")
    op.drop_index("uq_stores_name_lower", "stores")
    op.create_index("uq_stores_name_lower", "stores", [sa.text("lower(name)")], unique=True)
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): batch mode would copy the table and lose its
        # expression indexes.
        op.execute("ALTER TABLE stores DROP COLUMN deleted_at")
    else:
        op.drop_column("stores", "deleted_at")
