"""How many rows a list has, without ever paying for a full count (contract §5).

In this order: ``count=exact`` counts whatever it costs; a total the page already
shows needs no query; otherwise PostgreSQL's planner estimates the rows (EXPLAIN),
and a count capped at 10,001 rows runs when the estimate is at most 10,000, or
under a 10 ms statement timeout when it is at most 100,000 (unless the page's own
statement took longer than that already). SQLite has no estimate: the capped
count always runs there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, literal_column, select

from db import Explain, db

COUNT_CAP = 10_000  # exact counts up to this many rows
ESTIMATE_CEILING = 100_000  # above this estimate no count runs
COUNT_BUDGET_MS = 10  # the capped count's statement timeout between the two
QUERY_CANCELED = "57014"


def estimate_rows(query: Select[Any]) -> int | None:
    """The planner's estimate of ``query``'s rows; None where there is no planner."""
    if db.session.get_bind().dialect.name != "postgresql":
        return None
    rows: Select[Any] = select(literal_column("1")).select_from(query.order_by(None).subquery())
    plan = db.session.execute(Explain(rows)).scalar_one()
    return int(plan[0]["Plan"]["Plan Rows"])


def _capped(query: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(query.order_by(None).limit(COUNT_CAP + 1).subquery())


def _count_within_budget(query: Select[Any], budget_ms: int) -> int | None:
    """The capped count, given up (None) when it takes longer than the budget. The
    timeout is set inside a savepoint that is always rolled back, so it ends with it.

    It goes through the driver's cursor: with psycopg 3.3 and SQLAlchemy 2.1, a
    cancelled statement raised through SQLAlchemy left the worker to crash
    (segmentation fault) on a later request; the driver's own exception does not."""
    dialect = db.session.get_bind().dialect
    statement = _capped(query).compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    cursor: Any = db.session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute("SAVEPOINT count_budget")
    try:
        cursor.execute(f"SET LOCAL statement_timeout = {int(budget_ms)}")
        cursor.execute(str(statement), statement.params)
        counted: int | None = cursor.fetchone()[0]
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != QUERY_CANCELED:
            raise
        counted = None
    finally:
        cursor.execute("ROLLBACK TO SAVEPOINT count_budget")
        cursor.execute("RELEASE SAVEPOINT count_budget")
        cursor.close()
    return counted


def count_rows(
    query: Select[Any],
    known: int | None,
    *,
    exact: bool,
    estimate: int | None = None,
    page_ms: float | None = None,
    budget_ms: int = COUNT_BUDGET_MS,
) -> tuple[int | None, int]:
    """``(total, estimate)``: the exact total when it is known or cheap to learn, else
    None and the estimate (``estimate``: the planner's, if already asked; ``page_ms``:
    how long the page's own statement took, measured by the caller; ``budget_ms``: how
    long the count may take). The decision reads no clock: given the same inputs it
    is the same, which is what lets it be tested on a loaded machine."""
    if exact:
        total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        return total, total or 0
    if known is not None:
        return known, known
    if estimate is None:
        estimate = estimate_rows(query)
    if estimate is not None and estimate > ESTIMATE_CEILING:
        return None, estimate
    if estimate is None or estimate <= COUNT_CAP:
        counted = db.session.scalar(_capped(query))
    elif page_ms is not None and page_ms > budget_ms:
        counted = None  # the page alone took longer than the count may: a slow filter
    else:
        counted = _count_within_budget(query, budget_ms)
    if counted is not None and counted <= COUNT_CAP:
        return counted, counted
    # More than the cap: the estimate, raised to what the capped count proved.
    return None, max(estimate or 0, counted or 0)
