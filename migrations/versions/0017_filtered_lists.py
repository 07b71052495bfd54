"""GET /events and GET /audit filtered by type or target type read an index, not the
table: events by (owner_id, type, seq) (an owner's, and by store within them) and
(type, seq) (an admin's), and the audit log by (target_type, id). A filter these did
not serve was a scan of every row (the page's, or its capped count's): 0.4-0.5 s at
5,000,000 events, growing with the table (docs/performance.md, "Filtered events and
audit entries").

The events' indexes hold numbered events only (``seq IS NOT NULL``, as every listed
event is): an event is written unnumbered and gets its position from the relay, so
only that update, not the insert, writes to them.

Built like every earlier index, inside the migration's transaction (one transaction
under the migration lock, statement_timeout off: migrations/env.py): writes to the two
tables wait for the build, measured at 11.4 s for three such indexes on 3,000,000 events and
1.5 s on 2,000,000 audit entries (2-core machine), so about 2 minutes at 30,000,000
events.

Revision ID: 0017_filtered_lists
Revises: 0016_event_traceparent
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_filtered_lists"
down_revision = "0016_event_traceparent"
branch_labels = None
depends_on = None

NUMBERED = sa.text("seq IS NOT NULL")
EVENT_INDEXES = {
    "ix_events_owner_id_type_seq": ["owner_id", "type", "seq"],
    "ix_events_type_seq": ["type", "seq"],
}


def upgrade():
    for name, columns in EVENT_INDEXES.items():
        op.create_index(name, "events", columns, postgresql_where=NUMBERED, sqlite_where=NUMBERED)
    op.create_index("ix_audit_log_target_type_id", "audit_log", ["target_type", "id"])


def downgrade():
    op.drop_index("ix_audit_log_target_type_id", "audit_log")
    for name in EVENT_INDEXES:
        op.drop_index(name, "events")
