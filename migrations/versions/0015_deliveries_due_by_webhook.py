"""The sweep finds due attempts webhook by webhook: (webhook_id, next_attempt_at) of
pending attempts replaces (next_attempt_at) of pending attempts. The sweep took the
1,000 oldest due attempts of all webhooks, and one webhook's backlog (a receiver that
hangs, its attempts due again every WEBHOOK_REQUEUE_SECONDS) kept every other
webhook's retries out of it; it now takes each webhook's oldest (core/events/relay.py),
each through this index.

Revision ID: 0015_deliveries_due_by_webhook
Revises: 0014_composed_emails
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_deliveries_due_by_webhook"
down_revision = "0014_composed_emails"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade():
    op.drop_index("ix_webhook_deliveries_due", "webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_webhook_id_due",
        "webhook_deliveries",
        ["webhook_id", "next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade():
    op.drop_index("ix_webhook_deliveries_webhook_id_due", "webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
