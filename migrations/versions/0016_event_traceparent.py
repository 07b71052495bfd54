"""Events keep the trace they were written in: ``events.traceparent``, the W3C
``traceparent`` of the span current at the write (the request's, or the job's). A
delivery is sent in that trace, however late and by whichever task; before, it went
in the trace of the task that made it: a relay that gathered several requests' events
(the first one's), the sweep (its own), or a retry.

Nullable with no default: on PostgreSQL a column added so changes no row (instant on a
table of millions), and the events written before it are delivered as they were.

Revision ID: 0016_event_traceparent
Revises: 0015_deliveries_due_by_webhook
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_event_traceparent"
down_revision = "0015_deliveries_due_by_webhook"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("events", sa.Column("traceparent", sa.String(55), nullable=True))


def downgrade():
    op.drop_column("events", "traceparent")
