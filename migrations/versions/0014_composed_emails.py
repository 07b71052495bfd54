"""Emails in Unicode's composed form (NFC): the email field composes what it is given
since this revision, so an address typed with a separate combining accent and the
same address typed with the accented letter are one account. Existing addresses are
composed here, except one whose composed form another account already has (two
accounts that predate this revision: neither is merged nor changed; each still signs
in by username); of two that compose alike, neither composed yet, the older one is.

Revision ID: 0014_composed_emails
Revises: 0013_one_store_name_index
Create Date: 2026-12-07
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0014_composed_emails"
down_revision = "0013_one_store_name_index"
branch_labels = None
depends_on = None

# Only addresses with a character outside ASCII can change; PostgreSQL composes them
# itself (normalize(), a UTF-8 database), without reading them out.
# Another account's address taken composed: one already composed keeps it, else the
# lowest id of those that compose alike gets it.
COMPOSE = """
UPDATE users SET email = normalize(email, NFC)
WHERE email ~ '[^\\x01-\\x7f]' AND email IS NOT NFC NORMALIZED
  AND NOT EXISTS (
    SELECT 1 FROM users other
    WHERE other.id <> users.id
      AND lower(normalize(other.email, NFC)) = lower(normalize(users.email, NFC))
      AND (other.email IS NFC NORMALIZED OR other.id < users.id)
  )
"""


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(COMPOSE)
        return
    users = sa.table("users", sa.column("id"), sa.column("email"))
    rows = bind.execute(sa.select(users.c.id, users.c.email).order_by(users.c.id)).all()
    taken = {email.lower(): id_ for id_, email in rows if email is not None}
    for id_, email in rows:
        composed = unicodedata.normalize("NFC", email) if email is not None else None
        if composed is None or composed == email or taken.get(composed.lower(), id_) != id_:
            continue
        bind.execute(sa.update(users).where(users.c.id == id_).values(email=composed))
        taken[composed.lower()] = id_


def downgrade():
    pass  # the composed form is the same address: nothing to undo
