"""``flask import-items`` at database speed (PostgreSQL): the file is streamed into a
staging table with COPY, then checked and merged by a fixed number of set-based
statements, whatever the number of rows, names or tags (SQLite keeps the simple
path, core/catalog/csv_import.py, whose rules this follows exactly).

1. Each row is checked in Python as it is read (the same rules as RowSchema: a fast
   test for the common case, RowSchema itself for anything else and for the
   messages) and written to the staging table with its line number. Memory stays
   flat: nothing but the first errors is kept.
2. In SQL: names and SKUs given twice in the file (a row refused holds neither: a
   round more per chain of such refusals, SHARED); the item each row updates (the
   one with its SKU, else the one with its name: §13); an item two rows would update;
   a name that the merge would give two items. Each such row is an error of its line.
3. Counts (created / updated / unchanged) come from comparing the rows with the items
   and their tags, so a dry run or a refused file reports what would have happened.
4. Then, unless nothing may be written: the store's missing tags in one INSERT, the
   changed items in one UPDATE, stock counts through the ledger's bulk writer
   (core/catalog/stock.py count_many), new items in one INSERT (their ids drawn first,
   in the file's order: NEW_IDS), their links in one,
   and one event per item changed, then one per item created, each kind in one
   INSERT ... SELECT, the item's JSON built by SQL (core/events/catalog.py
   item_json); the new items' stock.moved likewise (NEW_MOVED): no new row comes back
   to Python. (A changed item's count goes through Python, for the thresholds it may
   cross.)

Each phase's time is logged at INFO on ``stores.import`` (bench/import_copy.py).

Everything is one transaction: any invalid row means nothing is written (unless
``skip_invalid``); ``dry_run`` rolls back. The items being changed are locked while
the import runs, so counts are not lost to a concurrent movement.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import marshmallow as ma
from psycopg.errors import UniqueViolation
from sqlalchemy import column, literal, select, table

from core.auth import audit
from core.catalog import stock
from core.catalog.csv_import import (
    MAX_REPORTED,
    ROW_COLUMNS,
    ImportConflictError,
    RowSchema,
    Summary,
    UnreadableFileError,
    _cells,
    problems_of,
    read_header,
    reading,
)
from core.catalog.stock import MAX_STOCK
from core.events.catalog import (
    ITEM_JSON,
    PREVIOUS_JSON,
    STORE_JSON,
    TAG_LIST,
    TAGS_JSON,
    created_changes,
    item_json,
    movements_written,
    utc_text,
)
from core.events.outbox import (
    current_actor,
    current_request_id,
    recorded_in_bulk,
    write_pending,
)
from core.web import tracing
from core.web.fields import BLANKS, MAX_QUANTITY, SKU_PATTERN, TAG_SEPARATOR, text_pattern
from db import BULK_TABLES, analyze, db
from models import Store
from models.item import STATUSES
from models.types import utcnow

log = logging.getLogger("stores.import")
IMPORT_LOCK = 19  # the advisory lock's first key: (19, store id) is a store's imports
PROGRESS_EVERY = 10_000  # rows between two calls of ``progress``

# The common case of each rule, as the fields check it once trimmed (core/web/fields.py);
# anything these do not accept goes to RowSchema, which accepts it or says why not.
_NAME = re.compile(text_pattern(80))
_DESCRIPTION = re.compile(text_pattern(2000, optional=True, multiline=True))
_PRICE = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,2})?")
_DIGITS = re.compile(r"[0-9]{1,10}")
_SKU = re.compile(SKU_PATTERN)

STAGING = """
CREATE TEMP TABLE import_rows (
    line integer NOT NULL,
    name text NOT NULL,
    lname text GENERATED ALWAYS AS (lower(name)) STORED,
    price numeric(12, 2) NOT NULL,
    description text,
    stock integer,
    tags text,
    sku text,
    status text,
    low_stock_threshold integer
) ON COMMIT DROP;
CREATE TEMP TABLE import_errors (
    line integer NOT NULL, col text, kind text NOT NULL, value text, other bigint
) ON COMMIT DROP
"""
COPY = (
    "COPY import_rows (line, name, price, description, stock, tags, sku, status, "
    "low_stock_threshold) FROM STDIN"
)

# Rows that say what an earlier valid row said: its name, else its SKU. A row refused
# holds neither (line 4 of "A,X / B,X / B,Y" is the first valid "B"), so the rows that
# share a name or a SKU with another (few: the rest are fine as they are) are judged
# in rounds, as reading the file in order would judge them: each round keeps the first
# undecided row of each of its name and SKU (no earlier row is left that could refuse
# it), then refuses the undecided rows that share a name or SKU with one kept. One
# round for the usual file; one more per link of a chain like the one above, for
# chains of up to ROUNDS links: a file made of a longer chain (each round reads every
# row left) has the rows still undecided then refused as repeats of the first row with
# their name, else their SKU, refused or not (the rule before, a line's error all the
# same).
ROUNDS = 10
SHARED = """
CREATE TEMP TABLE import_shared ON COMMIT DROP AS
SELECT line, name, lname, sku, NULL::boolean AS kept FROM (
    SELECT line, name, lname, sku, count(*) OVER (PARTITION BY lname) AS names,
           count(*) OVER (PARTITION BY sku) AS skus
    FROM import_rows
) r WHERE names > 1 OR (sku IS NOT NULL AND skus > 1);
ANALYZE import_shared
"""
KEEP = """
UPDATE import_shared s SET kept = true FROM (
    SELECT line, sku, min(line) OVER (PARTITION BY lname) AS by_name,
           min(line) OVER (PARTITION BY sku) AS by_sku
    FROM import_shared WHERE kept IS NULL
) f WHERE s.line = f.line AND f.line = f.by_name AND (f.sku IS NULL OR f.line = f.by_sku)
"""
REFUSE = """
UPDATE import_shared s SET kept = false
WHERE kept IS NULL AND (
    EXISTS (SELECT FROM import_shared k WHERE k.kept AND k.lname = s.lname)
    OR EXISTS (SELECT FROM import_shared k WHERE k.kept AND k.sku = s.sku)
)
"""
# Each row refused: an error of its name if an earlier row kept it, else of its SKU
# (read_rows checks the name first).
DUPLICATES = """
INSERT INTO import_errors (line, col, kind, value, other)
SELECT s.line, CASE WHEN n.line IS NULL THEN 'sku' ELSE 'name' END, 'duplicate',
       CASE WHEN n.line IS NULL THEN s.sku ELSE s.name END, coalesce(n.line, k.line)
FROM import_shared s
LEFT JOIN import_shared n ON n.kept AND n.lname = s.lname AND n.line < s.line
LEFT JOIN import_shared k ON k.kept AND k.sku = s.sku AND k.line < s.line
WHERE NOT s.kept;
INSERT INTO import_errors (line, col, kind, value, other)
SELECT line, CASE WHEN line > by_name THEN 'name' ELSE 'sku' END, 'duplicate',
       CASE WHEN line > by_name THEN name ELSE sku END,
       CASE WHEN line > by_name THEN by_name ELSE by_sku END
FROM (
    SELECT line, name, sku, kept, min(line) OVER (PARTITION BY lname) AS by_name,
           min(line) OVER (PARTITION BY sku) AS by_sku
    FROM import_shared
) r WHERE kept IS NULL;  -- left after ROUNDS: each has an earlier row with its name or SKU
DELETE FROM import_rows r USING import_shared s WHERE r.line = s.line AND s.kept IS NOT TRUE
"""
# The item each row updates: the store's item with its SKU, else the one with its name.
MATCH = """
CREATE TEMP TABLE import_plan ON COMMIT DROP AS
SELECT r.*, coalesce(s.id, n.id) AS item_id, NULL::integer AS old_stock,
       false AS changed, false AS relink
FROM import_rows r
LEFT JOIN items s ON s.store_id = %(store)s AND r.sku IS NOT NULL AND s.sku = r.sku
LEFT JOIN items n ON n.store_id = %(store)s AND lower(n.name) = r.lname;
CREATE INDEX ON import_plan (line);
ANALYZE import_plan
"""
# An item two rows would update (one by SKU, one by name): the later row is an error.
CLAIMED_TWICE = """
WITH found AS (
    INSERT INTO import_errors (line, col, kind, value, other)
    SELECT line, 'name', 'claimed', item_id::text, first FROM (
        SELECT line, item_id, min(line) OVER (PARTITION BY item_id) AS first
        FROM import_plan WHERE item_id IS NOT NULL
    ) d WHERE line <> first
    RETURNING line
)
DELETE FROM import_plan p USING found f WHERE p.line = f.line
"""
# A name the merge would give two items: the row's, kept by an item that no valid row
# updates: no row at all, or a row refused here (that item keeps its name, so a row
# renaming another item onto it is refused too: a chain of renames is refused from
# its held-up end back; names that go round are fine). The rows whose name another
# item holds first (few: a re-import's rows hold their own), then one recursive pass
# along the chains, a step and an index probe per link, however long they are.
HELD = """
CREATE TEMP TABLE import_held ON COMMIT DROP AS
SELECT p.line, p.item_id, n.id AS holder
FROM import_plan p
JOIN items n ON n.store_id = %(store)s AND lower(n.name) = p.lname
WHERE n.id IS DISTINCT FROM p.item_id;
CREATE INDEX ON import_held (holder);
ANALYZE import_held
"""
NAME_TAKEN = """
WITH RECURSIVE refused AS (
    SELECT h.line, h.item_id, h.holder FROM import_held h
    WHERE NOT EXISTS (SELECT 1 FROM import_plan q WHERE q.item_id = h.holder)
    UNION
    SELECT h.line, h.item_id, h.holder FROM refused r JOIN import_held h ON h.holder = r.item_id
), found AS (
    INSERT INTO import_errors (line, col, kind, value, other)
    SELECT r.line, 'name', 'taken', p.name, r.holder FROM refused r JOIN import_plan p USING (line)
    RETURNING line
)
DELETE FROM import_plan p USING found f WHERE p.line = f.line
"""
# The items the import will write, locked until it commits; then compared again, as
# they are now. (An item found unchanged is not locked: the import reads it before any
# later change, as if it had run first.)
LOCK = """
SELECT count(*) FROM (
    SELECT 1 FROM items i JOIN import_plan p ON p.item_id = i.id
    WHERE p.changed OR p.relink FOR UPDATE OF i
) locked
"""
# What each matched row changes, and the stock it counts from.
COMPARE = """
UPDATE import_plan p SET
    old_stock = i.stock,
    changed = (
        i.name IS DISTINCT FROM p.name OR i.price <> p.price
        OR (%(has_description)s AND i.description IS DISTINCT FROM p.description)
        OR (%(has_sku)s AND i.sku IS DISTINCT FROM p.sku)
        OR (p.status IS NOT NULL AND i.status <> p.status)
        OR (%(has_threshold)s AND i.low_stock_threshold IS DISTINCT FROM p.low_stock_threshold)
        OR (p.stock IS NOT NULL AND p.stock <> i.stock)
    )
FROM items i WHERE i.id = p.item_id {only}
"""
# Each row's tags, once each, in the order the file names them.
WANTED_TAGS = """
CREATE TEMP TABLE import_tags ON COMMIT DROP AS
SELECT DISTINCT ON (p.line, lower(t.name)) p.line, t.name, lower(t.name) AS lname, t.pos
FROM import_plan p, unnest(string_to_array(p.tags, '|')) WITH ORDINALITY AS t(name, pos)
WHERE p.tags <> ''
ORDER BY p.line, lower(t.name), t.pos;
ANALYZE import_tags
"""
# Matched items whose tags differ from the row's (by name, as the tags may not exist
# yet): a name on one side only, found by one pass over each side (a full join).
RELINK = """
UPDATE import_plan p SET relink = true FROM (
    SELECT DISTINCT coalesce(w.item_id, e.item_id) AS item_id
    FROM (SELECT p.item_id, w.lname FROM import_tags w JOIN import_plan p ON p.line = w.line
          WHERE p.item_id IS NOT NULL) w
    FULL JOIN (SELECT l.item_id, lower(t.name) AS lname FROM item_tags l
               JOIN tags t ON t.id = l.tag_id
               JOIN import_plan p ON p.item_id = l.item_id) e
      ON e.item_id = w.item_id AND e.lname = w.lname
    WHERE w.item_id IS NULL OR e.item_id IS NULL
) d WHERE p.item_id = d.item_id
"""
COUNTS = """
SELECT count(*) FILTER (WHERE item_id IS NULL),
       count(*) FILTER (WHERE item_id IS NOT NULL AND (changed OR relink)),
       count(*) FILTER (WHERE item_id IS NOT NULL AND NOT (changed OR relink))
FROM import_plan
"""
# The store's tags the file names and the store lacks, in the order the file names them,
# their ids drawn first (their events and audit entries find them there).
NEW_TAGS = """
CREATE TEMP TABLE import_new_tags ON COMMIT DROP AS
SELECT nextval('tags_id_seq')::integer AS tag_id, name FROM (
    -- Each name's first row (a row names a tag once): grouped by hashing, not by
    -- sorting every link of the file.
    SELECT w.name, w.lname, w.line, w.pos
    FROM (SELECT lname, min(line) AS line FROM import_tags GROUP BY lname) earliest
    JOIN import_tags w USING (lname, line)
    WHERE NOT EXISTS (
        SELECT 1 FROM tags t WHERE t.store_id = %(store)s AND lower(t.name) = w.lname
    )
    ORDER BY line, pos
) f;
INSERT INTO tags (id, name, store_id, created_at, updated_at)
SELECT tag_id, name, %(store)s, %(now)s, %(now)s FROM import_new_tags ORDER BY tag_id
"""
# tag.created of each new tag, first (a new item's JSON names them), and its audit
# entry: as TagRecordSchema dumps it, its times the rows' (``written_text``).
NEW_TAG_EVENTS = """
INSERT INTO events (type, store_id, owner_id, actor_type, actor_id, request_id, traceparent,
                    data, created_at)
SELECT 'tag.created', %(store)s, %(owner)s, %(actor_type)s, %(actor_id)s, %(request_id)s,
       %(traceparent)s, json_build_object('object', json_build_object(
           'id', n.tag_id, 'name', n.name, 'store_id', %(store)s,
           'created_at', %(written_text)s::text, 'updated_at', %(written_text)s::text)),
       %(now)s
FROM import_new_tags n ORDER BY n.tag_id;
INSERT INTO audit_log (actor_type, actor_id, action, target_type, target_id, store_id,
                       changes, request_id, ip, created_at)
SELECT %(audit_actor_type)s, %(audit_actor_id)s, 'tag.created', 'tag', n.tag_id, %(store)s,
       json_build_object('name', json_build_array(NULL, n.name),
                         'store_id', json_build_array(NULL, %(store)s)),
       %(audit_request_id)s, %(audit_ip)s, %(now)s
FROM import_new_tags n ORDER BY n.tag_id
"""
# Names and SKUs that move are first let go of, so that two items may swap theirs
# (a unique index is checked row by row); chr(31) is in no name.
LET_GO = """
UPDATE items i SET
    name = left(i.name, 60) || chr(31) || i.id,
    sku = CASE WHEN %(has_sku)s AND i.sku IS DISTINCT FROM p.sku THEN NULL ELSE i.sku END
FROM import_plan p
WHERE p.item_id = i.id AND p.changed
  AND (lower(i.name) <> p.lname OR (%(has_sku)s AND i.sku IS DISTINCT FROM p.sku))
"""
UPDATE_ITEMS = """
UPDATE items i SET
    name = p.name,
    price = p.price,
    description = CASE WHEN %(has_description)s THEN p.description ELSE i.description END,
    sku = CASE WHEN %(has_sku)s THEN p.sku ELSE i.sku END,
    status = coalesce(p.status, i.status),
    low_stock_threshold = CASE WHEN %(has_threshold)s THEN p.low_stock_threshold
                               ELSE i.low_stock_threshold END,
    updated_at = %(now)s
FROM import_plan p
WHERE p.item_id = i.id AND (p.changed OR p.relink)
"""
# The new items' ids, drawn in the file's order into a table of their own before the
# INSERT gives each row its id: the later statements find a new item by its line here,
# and nothing is written back into the plan (a second write of every new row, a
# twelfth of the INSERT's time, bench/import_insert.py ``ids-first``).
NEW_IDS = """
CREATE TEMP TABLE import_new ON COMMIT DROP AS
SELECT line, nextval('items_id_seq')::integer AS item_id
FROM (SELECT line FROM import_plan WHERE item_id IS NULL ORDER BY line) p;
ANALYZE import_new
"""
NEW_ITEMS = """
INSERT INTO items (id, name, price, description, stock, store_id, sku, status,
                   low_stock_threshold, created_at, updated_at)
SELECT n.item_id, p.name, p.price, p.description, coalesce(p.stock, 0), %(store)s, p.sku,
       coalesce(p.status, 'active'), p.low_stock_threshold, %(now)s, %(now)s
FROM import_new n JOIN import_plan p USING (line) ORDER BY n.item_id
"""
# The GIN indexes of items (full text, trigrams) take new entries into a pending list
# and merge it into the index when it passes gin_pending_list_limit (4 MB by default,
# which a load passes every few thousand rows: hundreds of merges, each rewriting the
# last page of every common trigram's list). The load's own list grows larger before
# each merge (fewer, larger merges); what is left is merged before the commit, with
# maintenance_work_mem (gin_clean_pending_list, allowed to the indexes' owner), so
# that no request after the import pays for it (a GIN scan reads the whole list).
GIN_PENDING = "64MB"
GIN_SETTINGS = f"""
SET LOCAL gin_pending_list_limit = '{GIN_PENDING}';
SET LOCAL maintenance_work_mem = '256MB'
"""
GIN_MERGE = """
SELECT gin_clean_pending_list(c.oid) FROM pg_class c
WHERE c.oid IN ('ix_items_search_vector'::regclass, 'ix_items_text_trgm'::regclass)
  AND pg_has_role(c.relowner, 'USAGE')
"""
UNLINK = """
DELETE FROM item_tags l USING import_plan p WHERE p.relink AND l.item_id = p.item_id
"""
# The links of the new items and of the items relinked. (The rows first, then their
# tags: the planner underestimates the tags' join by a hundredfold, and from it chose
# one probe of the plan's index per link.)
LINK = """
INSERT INTO item_tags (item_id, tag_id)
SELECT x.item_id, t.id
FROM (SELECT line, item_id FROM import_new
      UNION ALL
      SELECT line, item_id FROM import_plan WHERE relink) x
JOIN import_tags w ON w.line = x.line
JOIN tags t ON t.store_id = %(store)s AND lower(t.name) = w.lname
ORDER BY 1, 2
"""

# The changed items as GET showed them before the import: their events' `previous` (§10).
BEFORE = f"""
CREATE TEMP TABLE import_before ON COMMIT DROP AS
SELECT i.id AS item_id, {ITEM_JSON} AS obj
FROM import_plan p
JOIN items i ON i.id = p.item_id
JOIN stores s ON s.id = i.store_id
LEFT JOIN ({TAGS_JSON} JOIN import_plan q ON q.item_id = l.item_id
           WHERE q.changed OR q.relink GROUP BY l.item_id) g ON g.item_id = i.id
WHERE p.changed OR p.relink
"""  # noqa: S608 - fragments of our own, no input
# Each changed item (``told``) as an audit entry (§15), as core/auth/audit.py
# ``updated`` writes them: ``changes`` built from its new JSON and ``previous``, whoever
# asked for the import its actor. A change of the stock alone has its entry too.
NOT_CHANGES = ", ".join(f"'{key}'" for key in sorted(audit.NOT_CHANGES))
UPDATED_CHANGES = f"""(SELECT json_object_agg(
    f.key, json_build_array(f.value, after_b -> f.key) ORDER BY f.key)
 FROM json_each(previous) AS f(key, value)
 WHERE f.key NOT IN ({NOT_CHANGES}))"""  # noqa: S608 - fragments of our own, no input
UPDATED_AUDIT = f"""INSERT INTO audit_log (actor_type, actor_id, action, target_type, target_id,
                       store_id, changes, request_id, ip, created_at)
SELECT %(audit_actor_type)s, %(audit_actor_id)s, 'item.updated', 'item',
       (after_b ->> 'id')::int, %(store)s, COALESCE({UPDATED_CHANGES}, '{{}}'::json),
       %(audit_request_id)s, %(audit_ip)s, %(now)s
FROM told WHERE previous IS NOT NULL ORDER BY line"""  # noqa: S608 - fragments of our own


# item.updated of each item the import changes (§10), as record() writes them (core/
# events/outbox.py), in the file's order, each with its audit entry. An item whose
# JSON did not change (a tag linked again under the same name) writes neither; one
# whose stock alone changed writes its entry and no event: its count's stock.moved
# tells it (§16, a movement writes no item.updated).
UPDATED_EVENTS = f"""
WITH written AS (
    SELECT p.line, {ITEM_JSON} AS after, b.obj AS before
    FROM import_plan p
    JOIN items i ON i.id = p.item_id
    JOIN stores s ON s.id = i.store_id
    LEFT JOIN ({TAGS_JSON} JOIN import_plan q ON q.item_id = l.item_id
               WHERE q.changed OR q.relink GROUP BY l.item_id) g ON g.item_id = i.id
    JOIN import_before b ON b.item_id = i.id
    WHERE p.changed OR p.relink
), told AS MATERIALIZED (  -- once per row (its filter and its use would each run it)
    SELECT line, after, after_b, {PREVIOUS_JSON} AS previous
    -- OFFSET 0: the subquery stays one (flattened, each key's ``after_b ->`` in
    -- ``previous`` parsed the whole JSON again: 3 times the comparison's time)
    FROM (SELECT line, after, before, after::jsonb AS after_b FROM written OFFSET 0) w
), sent AS (  -- run although nothing reads it (PostgreSQL runs every write of a WITH)
    INSERT INTO events (type, store_id, owner_id, actor_type, actor_id, request_id,
                        traceparent, data, created_at)
    SELECT 'item.updated', %(store)s, %(owner)s, %(actor_type)s, %(actor_id)s, %(request_id)s,
           %(traceparent)s, json_build_object('object', after, 'previous', previous), %(now)s
    FROM told
    WHERE previous IS NOT NULL
      AND EXISTS (SELECT FROM json_object_keys(previous) AS k(key) WHERE key <> 'stock')
    ORDER BY line
)
{UPDATED_AUDIT}
"""  # noqa: S608 - fragments of our own, no input


def _written_at(column: str) -> str:
    """SQL: the text of a new item's time, given once (``written_text``) for the time
    the import wrote (a link's trigger may have moved ``updated_at`` on: then its own)."""
    return (
        f"CASE WHEN {column} = %(written_at)s THEN %(written_text)s::text "
        f"ELSE {utc_text(column)} END"
    )


# The store's JSON, built once per statement, not per row (as the time's text is).
CREATED_STORE = f"(SELECT {STORE_JSON} FROM stores s WHERE s.id = %(store)s)"  # noqa: S608
CREATED_JSON = item_json(
    store=CREATED_STORE,
    created_at=_written_at("i.created_at"),
    updated_at=_written_at("i.updated_at"),
)
# The new items ``i`` in the file's order, each with its tags' JSON from the row's
# (import_tags, joined to tags as LINK links them).
NEW_ITEMS_BUILT = f"""FROM import_new n
JOIN items i ON i.id = n.item_id
LEFT JOIN (
    SELECT w.line, {TAG_LIST} AS tags_json
    FROM import_tags w JOIN tags t ON t.store_id = %(store)s AND lower(t.name) = w.lname
    GROUP BY w.line
) g ON g.line = n.line
ORDER BY n.line"""  # noqa: S608 - fragments of our own, no input
# item.created of each new item, after the changed items' events. (Ordered by line, not
# by kind and line as one statement for both kinds was: the planner then sorted the
# built JSON, which spilled to disk at a million rows.)
CREATED_EVENTS = f"""
INSERT INTO events (type, store_id, owner_id, actor_type, actor_id, request_id, traceparent,
                    data, created_at)
SELECT 'item.created', %(store)s, %(owner)s, %(actor_type)s, %(actor_id)s, %(request_id)s,
       %(traceparent)s, json_build_object('object', {CREATED_JSON}), %(now)s
{NEW_ITEMS_BUILT}
"""
# The audit entry (§15) of each new item, its changes built from the row as the event's
# object is (reading the events' JSON back cost 3 times as much).
CREATED_AUDIT = f"""
INSERT INTO audit_log (actor_type, actor_id, action, target_type, target_id, store_id,
                       changes, request_id, ip, created_at)
SELECT %(audit_actor_type)s, %(audit_actor_id)s, 'item.created', 'item', i.id, %(store)s,
       {created_changes(CREATED_STORE)}, %(audit_request_id)s, %(audit_ip)s, %(now)s
{NEW_ITEMS_BUILT}
"""

# The items whose counts an import may write (their stock.moved events): the changed
# ones, read before the write (each in the file's order).
UPDATED_IDS = """SELECT item_id FROM import_plan
WHERE item_id IS NOT NULL AND (changed OR relink) ORDER BY line"""
# stock.moved of each new item's count, after the changed items' (§10): a new item's
# first count crosses no threshold, so its events are its movements alone, each as
# StockMovementSchema dumps it, written by SQL in the movements' order (no row comes
# back to Python, nothing is held until the commit). The movements are put in order
# before their JSON is built; their time is the same for all, its text given once.
NEW_MOVED = """
INSERT INTO events (type, store_id, owner_id, actor_type, actor_id, request_id, traceparent,
                    data, created_at)
SELECT 'stock.moved', %(store)s, %(owner)s, %(actor_type)s, %(actor_id)s, %(request_id)s,
       %(traceparent)s, json_build_object('object', json_build_object(
           'id', m.id, 'item_id', m.item_id, 'delta', m.delta, 'stock_after', m.stock_after,
           'reason', m.reason, 'reference', m.reference, 'user_id', m.user_id,
           'created_at', %(written_text)s::text)),
       %(now)s
FROM (
    SELECT m.id, m.item_id, m.delta, m.stock_after, m.reason, m.reference, m.user_id
    FROM import_new n JOIN stock_movements m ON m.item_id = n.item_id
    WHERE m.created_at = %(written_at)s
    ORDER BY m.id
) m
ORDER BY m.id
"""

MESSAGES: dict[str, Callable[[str, int], str]] = {
    "duplicate": lambda value, other: f"{value!r} is on line {other} already.",
    "claimed": lambda value, other: f"Item {value} is updated by line {other} already.",
    "taken": lambda value, other: (
        f"{value!r} is the name of item {other}, which no valid row renames."
    ),
}


@dataclass
class Columns:
    """Which optional columns the file has: a column left out leaves its field as it is."""

    description: bool
    stock: bool
    tags: bool
    sku: bool
    status: bool
    low_stock_threshold: bool


def _restored(cell: str | None) -> str:
    """A cell as the export wrote it, back to its text (csv_format.restore; a cell a
    short row lacks is empty)."""
    if not cell:
        return ""
    return cell[1:] if cell[0] == "'" else cell


@dataclass(frozen=True)
class Positions:
    """Where each column the importer reads is in a row (None: not in the file; a
    column named twice is read from its last place, as csv.DictReader does)."""

    name: int
    price: int
    description: int | None
    stock: int | None
    tags: int | None
    sku: int | None
    status: int | None
    low_stock_threshold: int | None

    @classmethod
    def of(cls, columns: list[str]) -> Positions:
        at = {column: place for place, column in enumerate(columns)}
        return cls(*(at.get(column) for column in ROW_COLUMNS))  # type: ignore[arg-type]


def _fast(row: list[str], at: Positions) -> tuple[Any, ...] | None:
    """The row (its cells, as many as the header's) ready for COPY when every cell is
    of the common, clearly valid kind; None sends it to RowSchema. A text is trimmed
    as the fields trim it; a number or a code with str.strip, as _cells does."""
    name = _restored(row[at.name]).strip(BLANKS)
    price = _restored(row[at.price]).strip(" \t\n\r")
    if not _NAME.match(name) or not _PRICE.fullmatch(price):
        return None
    description = None
    if at.description is not None:
        description = _restored(row[at.description]).strip(BLANKS) or None
        if description is not None and not _DESCRIPTION.match(description):
            return None
    count = "" if at.stock is None else _restored(row[at.stock]).strip()
    if count and not (_DIGITS.fullmatch(count) and int(count) <= MAX_QUANTITY):
        return None
    tags = "" if at.tags is None else _restored(row[at.tags])
    if tags:
        names = [tag.strip(BLANKS) for tag in tags.split(TAG_SEPARATOR)]
        for tag in names:
            if not _NAME.match(tag):
                return None
        tags = TAG_SEPARATOR.join(names)
    sku = "" if at.sku is None else _restored(row[at.sku]).strip()
    if sku and not _SKU.fullmatch(sku):
        return None
    status = "" if at.status is None else _restored(row[at.status]).strip()
    if status and status not in STATUSES:
        return None
    threshold = "" if at.low_stock_threshold is None else _restored(row[at.low_stock_threshold])
    threshold = threshold.strip()
    if threshold and not (_DIGITS.fullmatch(threshold) and int(threshold) <= MAX_STOCK):
        return None
    return (
        name,
        price,
        description,
        count or None,
        tags,
        sku or None,
        status or None,
        threshold or None,
    )


def _checked(data: dict[str, Any]) -> tuple[Any, ...]:
    """A row RowSchema accepted, ready for COPY."""
    return (
        data["name"],
        str(data["price"]),
        data.get("description"),
        data.get("stock"),
        TAG_SEPARATOR.join(data.get("tags") or ()),
        data.get("sku"),
        data.get("status"),
        data.get("low_stock_threshold"),
    )


class _Clock:
    """Where an import's time goes: one INFO line per phase on ``stores.import``
    (bench/import_copy.py reads them)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        log.info("import phase %s: %.3f s", phase, now - self.last)
        self.last = now


class _Errors:
    """The errors of the first lines (``listed`` of them, from Python and from SQL),
    and the count of invalid rows."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.found: list[tuple[int, str | None, str]] = []

    def add(self, line: int, problems: list[tuple[str | None, str]]) -> None:
        """An invalid row (counted once) and its problems (column, message). Python
        finds them in line order: past the first ``listed``, none is kept."""
        self.summary.invalid += 1
        room = max(0, self.summary.listed - len(self.found))
        self.found += [(line, name, message) for name, message in problems[:room]]

    def report(self) -> None:
        """Into the summary, by line: Python's and SQL's errors come in two passes."""
        ordered = sorted(self.found, key=lambda e: e[0])[: self.summary.listed]
        self.summary.errors.extend(
            {"line": line, "column": name, "message": message} for line, name, message in ordered
        )


def _load(cursor: Any, text: IO[str], errors: _Errors, progress: Callable[[int], None]) -> Columns:
    header = csv.DictReader(text)
    columns = read_header(header)
    has = Columns(
        *(
            name in columns
            for name in ("description", "stock", "tags", "sku", "status", "low_stock_threshold")
        )
    )
    at = Positions.of(columns)
    width = len(columns)
    schema = RowSchema()
    # The rows as lists (a dict per row costs more than checking it): csv.DictReader's
    # own reader, whose rules this follows (blank lines skipped, short rows padded).
    reader = header.reader
    line, since = reader.line_num + 1, 0
    with cursor.copy(COPY) as copy:
        for row in reading(reader):
            if not row:  # a blank line: DictReader reads on, the next row starts after it
                line = reader.line_num + 1
                continue
            start, line = line, reader.line_num + 1
            since += 1
            if since == PROGRESS_EVERY:
                progress(since)
                since = 0
            if len(row) > width:  # more cells than columns
                errors.add(start, [(None, f"{len(row)} cells, expected at most {width}.")])
                continue
            if len(row) < width:
                row += [""] * (width - len(row))  # DictReader's None, read as ""
            ready = _fast(row, at)
            if ready is None:
                try:
                    ready = _checked(schema.load(_cells(dict(zip(columns, row, strict=True)))))
                except ma.ValidationError as exc:
                    errors.add(start, problems_of(exc))
                    continue
            copy.write_row((start, *ready))
    progress(since)
    return has


def _run(cursor: Any, statements: str, params: dict[str, Any] | None = None) -> None:
    """Statements separated by ``;`` and a line break, one at a time (a statement with
    parameters goes alone)."""
    for statement in statements.split(";\n"):
        cursor.execute(statement, params)


def _sql_errors(cursor: Any, errors: _Errors) -> None:
    cursor.execute("SELECT count(*) FROM import_errors")
    total = cursor.fetchone()[0]
    cursor.execute(
        "SELECT line, col, kind, value, other FROM import_errors ORDER BY line LIMIT %s",
        (errors.summary.listed,),
    )
    # The first lines' (one error a row), beside Python's: report() keeps the first.
    errors.found += [
        (line, col, MESSAGES[kind](value, other))
        for line, col, kind, value, other in cursor.fetchall()
    ]
    errors.summary.invalid += total


def import_items(
    store: Store,
    raw: IO[bytes],
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[int], None] = lambda _rows: None,
    listed: int = MAX_REPORTED,
    commit: bool = True,
    user_id: int | None = None,
    source: audit.Origin = audit.SYSTEM,
) -> Summary:
    """Import ``raw`` (a binary file) into ``store``; commits unless nothing may be
    written (invalid rows without ``skip_invalid``, or ``dry_run``). With
    ``commit=False`` the rows stay in the session's open transaction (a job's). The
    counts' movements are ``user_id``'s (None from the command line); the audit
    entries' actor is ``source``'s."""
    summary = Summary(listed=listed)
    errors = _Errors(summary)
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    cursor = db.session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    clock = _Clock()
    try:
        # A bulk load, not a request: no statement timeout (DB_STATEMENT_TIMEOUT_MS
        # bounds requests); hash joins and sorts of the whole file in memory where
        # they fit.
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute("SET LOCAL work_mem = '256MB'")
        # Imports of one store take turns: each matches the file against the store as
        # it finds it, so two at once could both create a name (a unique violation).
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (IMPORT_LOCK, store.id))
        _run(cursor, GIN_SETTINGS)
        _run(cursor, STAGING)
        has = _load(cursor, text, errors, progress)
        cursor.execute("ANALYZE import_rows")
        clock.lap("read and COPY into staging")
        _run(cursor, SHARED)
        for _ in range(ROUNDS + 1):  # a round per link of a chain, and one for its end
            cursor.execute(KEEP)
            if not cursor.rowcount:
                break
            cursor.execute(REFUSE)
        _run(cursor, DUPLICATES)
        now = utcnow()
        params = {
            "store": store.id,
            "now": now,
            "has_description": has.description,
            "has_sku": has.sku,
            "has_threshold": has.low_stock_threshold,
            "user_id": user_id,
        }
        _run(cursor, MATCH, params)
        cursor.execute(CLAIMED_TWICE)
        _run(cursor, HELD, params)
        cursor.execute(NAME_TAKEN)
        _sql_errors(cursor, errors)
        clock.lap("duplicates and matching")
        cursor.execute(COMPARE.format(only=""), params)
        _run(cursor, WANTED_TAGS)
        cursor.execute(RELINK)
        cursor.execute(LOCK)
        cursor.execute(COMPARE.format(only="AND (p.changed OR p.relink)"), params)
        # The plan's statistics again, now that it says which rows change: ANALYZEd
        # while every flag was false, the planner read "changed OR relink" as one row
        # and joined the tags once per changed row (10,000 updates: 199 s, not 0.1 s).
        cursor.execute("ANALYZE import_plan")
        cursor.execute(COUNTS)
        summary.created, summary.updated, summary.unchanged = cursor.fetchone()
        errors.report()
        clock.lap("compare, tags wanted, lock")
        if dry_run or (summary.invalid and not skip_invalid):
            db.session.rollback()
            return summary
        told = bool(summary.created or summary.updated)  # else no event to write
        if told:
            cursor.execute(BEFORE)
            cursor.execute(UPDATED_IDS)
            updated = [row[0] for row in cursor.fetchall()]
        clock.lap("items before (events)")
        _write(cursor, params, clock, summary)
        if told:
            actor = current_actor()
            told_by = {
                **params,
                "owner": store.owner_id,
                "actor_type": actor["type"],
                "actor_id": actor.get("id"),
                "request_id": current_request_id(),
                "traceparent": tracing.current_traceparent(),
                "audit_actor_type": source.actor_type,
                "audit_actor_id": source.actor_id,
                "audit_request_id": source.request_id,
                "audit_ip": source.ip,
                "now": utcnow(),  # the events' and audit entries' time
                "written_at": now,  # the rows' (and the new items' movements')
                "written_text": now.isoformat(),
            }
            _run(cursor, NEW_TAG_EVENTS, told_by)
            if summary.updated:
                cursor.execute(UPDATED_EVENTS, told_by)
            if summary.created:
                cursor.execute(CREATED_EVENTS, told_by)
                cursor.execute(CREATED_AUDIT, told_by)
            recorded_in_bulk()
            clock.lap("events")
            # stock.moved for each count written: the changed items' (with the
            # crossings each makes) written first, then the new items'.
            movements_written(store, updated, now, set())
            write_pending()
            if summary.created:
                cursor.execute(NEW_MOVED, told_by)
        clock.lap("stock.moved events")
    except UnicodeDecodeError as exc:
        db.session.rollback()
        raise UnreadableFileError(f"The file is not UTF-8 text ({exc.reason}).") from None
    except csv.Error as exc:
        db.session.rollback()
        raise UnreadableFileError(f"Not a CSV file this importer can read: {exc}.") from None
    except UniqueViolation as exc:  # the store's names were matched unlocked (MATCH)
        db.session.rollback()
        raise _taken(exc, store.id) from None
    except BaseException:
        db.session.rollback()
        raise
    finally:
        text.detach()  # the caller's file stays the caller's to close
        cursor.close()
    if commit:
        analyze(*BULK_TABLES)  # commits, then fresh statistics for the list counts
        clock.lap("commit and analyze")
    return summary


def _taken(exc: UniqueViolation, store_id: int) -> ImportConflictError:
    """What the unique index says was taken: ``Key (store_id, lower(name::text))=(7,
    milk) already exists`` (uq_items_store_id_name_lower), or ``Key (sku,
    store_id)=(M-1, 7) ...`` (uq_items_sku_store_id)."""
    sku = "sku" in (exc.diag.constraint_name or "")
    key = re.search(r"\)=\((.*)\) already exists", exc.diag.message_detail or "")
    value = None
    if key:
        around = rf"^(.*), {store_id}$" if sku else rf"^{store_id}, (.*)$"
        found = re.match(around, key.group(1))
        value = found.group(1) if found else None
    return ImportConflictError("SKU" if sku else "name", value)


NEW = table("import_new", column("line"), column("item_id"))
PLAN = table(
    "import_plan",
    column("line"),
    column("item_id"),
    column("stock"),
    column("old_stock"),
    column("changed"),
)


def _write(cursor: Any, params: dict[str, Any], clock: _Clock, summary: Summary) -> None:
    """The plan's changes; a kind of change no row makes costs no statement (each
    would read the whole plan to find nothing)."""
    if summary.created or summary.updated:
        _run(cursor, NEW_TAGS, params)
        _run(cursor, NEW_IDS)  # empty without new rows: LINK reads it
    if summary.updated:
        cursor.execute(LET_GO, params)
        cursor.execute(UPDATE_ITEMS, params)
        # Matched items whose count differs: their stock and a count movement each.
        stock.count_many(
            select(PLAN.c.item_id, PLAN.c.old_stock.label("before"), PLAN.c.stock.label("after"))
            .where(PLAN.c.stock.is_not(None), PLAN.c.stock != PLAN.c.old_stock)
            .order_by(PLAN.c.line),  # the movements (and so their events) in the file's order
            reference="import",
            now=params["now"],
            user_id=params["user_id"],
        )
    clock.lap("new tags, updated items and their counts")
    if summary.created:
        cursor.execute(NEW_ITEMS, params)
        clock.lap("new items")
        # New items were written with their stock: a count movement each that gave one.
        stock.count_many(
            select(NEW.c.item_id, literal(0).label("before"), PLAN.c.stock.label("after"))
            .join_from(NEW, PLAN, NEW.c.line == PLAN.c.line)
            .where(PLAN.c.stock.is_not(None))
            .order_by(NEW.c.item_id),  # the movements in the file's order too
            reference="import",
            now=params["now"],
            user_id=params["user_id"],
            created=True,
        )
        clock.lap("stock ledger of new items")
    if summary.updated:
        cursor.execute(UNLINK)
    if summary.created or summary.updated:
        cursor.execute(LINK, params)
    clock.lap("tag links")
    if summary.created or summary.updated:
        cursor.execute(GIN_MERGE)  # after the last write of items
    clock.lap("GIN pending lists merged")
