"""Filtered lists of big tables read an index in the list's order (migration 0017): on
PostgreSQL, with 100,000 rows and fresh statistics, every statement of the request
(the page, its capped count) reads the filter's index, never the whole table."""

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text

from db import db
from helpers import Client
from models import User

# 100,000 numbered events of 10 owners (alice's: 1 in 10) with 7 stores each; the
# filtered types are 1 in 1,000.
EVENTS = """
INSERT INTO events (seq, type, store_id, owner_id, actor_type, data, created_at)
SELECT g, CASE WHEN g % 1000 = 0 THEN 'stock.low' WHEN g % 1000 = 1 THEN 'job.failed'
              WHEN g % 1000 = 2 THEN 'webhook.disabled' ELSE 'item.updated' END,
       CASE WHEN g % 1000 IN (1, 2) THEN NULL ELSE (g / 1000) % 10 * 10 + g % 7 END,
       CASE WHEN (g / 1000) % 10 = 0 THEN :owner ELSE 1000 + (g / 1000) % 10 END,
       'user', '{}', now()
FROM generate_series(1, 100000) g;
ANALYZE events
"""
AUDIT = """
INSERT INTO audit_log (actor_type, actor_id, action, target_type, target_id, changes, created_at)
SELECT 'user', 1, CASE WHEN g % 10 = 0 THEN 'tag.created' ELSE 'item.updated' END,
       CASE WHEN g % 10 = 0 THEN 'tag' ELSE 'item' END, g, '{}', now()
FROM generate_series(1, 100000) g;
ANALYZE audit_log
"""


def plan_nodes(node: dict[str, Any]) -> Any:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def reads(app: Flask, client: Client, url: str, headers: dict[str, str], table: str) -> Any:
    """The indexes each statement of ``url`` that reads ``table`` uses (none of them
    a sequential scan of it), and whether it sorts."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.startswith("SELECT") and f"FROM {table}" in statement:
            sent.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(url, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.json
    assert sent, url
    with app.app_context():
        for statement, parameters in sent:
            plan = db.session.connection().exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) {statement}", parameters
            )
            nodes = list(plan_nodes(plan.scalar_one()[0]["Plan"]))
            types = {n["Node Type"] for n in nodes if n.get("Relation Name") == table}
            assert "Seq Scan" not in types, nodes
            yield {n["Index Name"] for n in nodes if "Index Name" in n}, "Sort" in types


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("who", "query", "index"),
    [
        ("owner", "type=stock.low", "ix_events_owner_id_type_seq"),
        ("owner", "store_id=3&type=stock.low", "ix_events_owner_id_type_seq"),
        ("admin", "type=stock.low", "ix_events_type_seq"),
    ],
)
def test_events_filtered_by_type_read_their_index(
    app: Flask,
    client: Client,
    alice: User,
    admin: User,
    auth: Any,
    who: str,
    query: str,
    index: str,
) -> None:
    with app.app_context():
        for statement in EVENTS.split(";\n"):
            db.session.execute(text(statement), {"owner": alice.id})
        db.session.commit()
    headers = auth(alice if who == "owner" else admin)
    url = f"/events?{query}&page_size=5"
    statements = list(reads(app, client, url, headers, "events"))
    assert statements  # the page, and its capped count when the page is full
    for scans, sorts in statements:
        assert scans == {index}, (query, scans)
        assert not sorts


@pytest.mark.postgres
def test_an_owners_events_of_several_rare_types_read_one_range_each(
    app: Flask, client: Client, alice: User, auth: Any
) -> None:
    """Several types: a range of (owner_id, type, seq) each, their few rows sorted
    (the planner may read the ranges as a bitmap)."""
    with app.app_context():
        for statement in EVENTS.split(";\n"):
            db.session.execute(text(statement), {"owner": alice.id})
        db.session.commit()
    url = "/events?type=job.failed&type=webhook.disabled"
    for scans, _sorts in reads(app, client, url, auth(alice), "events"):
        assert scans == {"ix_events_owner_id_type_seq"}, scans


@pytest.mark.postgres
def test_the_audit_log_by_target_type_reads_its_index(
    app: Flask, client: Client, admin: User, auth: Any
) -> None:
    with app.app_context():
        for statement in AUDIT.split(";\n"):
            db.session.execute(text(statement))
        db.session.commit()
    url = "/audit?target_type=tag&page_size=5"
    statements = list(reads(app, client, url, auth(admin), "audit_log"))
    assert statements
    for scans, sorts in statements:
        assert scans == {"ix_audit_log_target_type_id"}, scans
        assert not sorts
