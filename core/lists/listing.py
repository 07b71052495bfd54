"""Every list, one page at a time (contract §5): keyset cursors at any depth, page
numbers for the first 10,000 rows, and counts that never cost a full scan.

A list declares its sorts once, as a table of sort name -> ordered key columns,
ending with the id tie-break::

    ITEMS = Listing({
        "id": (Item.id,),
        "name": (func.lower(Item.name), Item.id),
        "price": (Item.price, Item.id),
    })

Everything else derives from that table: the ``sort`` choices of the query schema
(each with its ``-`` twin), the ORDER BY, the keyset predicate and the cursor's
check. Adding a sort is one line here plus an index that serves it (for the
example, ``(price, id)``). Key columns must be NOT NULL. The view is written as::

    @blp.etag
    @blp.response(200, ItemSchema(many=True), headers=LIST_HEADERS)
    @ITEMS.paginate(blp, ItemQuerySchema)
    def get(self, args):
        return select(Item).where(...)   # filtered, unordered

``paginate`` parses the filters with the view's schema plus ``page``, ``page_size``,
``cursor``, ``count`` (and ``sort``; and ``fields`` when it is told the schema the
list answers with: ``paginate(blp, ItemQuerySchema, fields=ItemSchema)``), gives the
view the filters and the resolved sort, then orders, limits and counts the Select the
view returns, and sets the ``Link``, ``X-Total-Count`` / ``X-Total-Count-Estimate`` and
``X-Pagination`` headers. A list's statements share one snapshot on PostgreSQL (see db.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import marshmallow as ma
from sqlalchemy import Row, Select
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import desc_op

from core.lists.counting import COUNT_CAP
from core.lists.cursors import Key
from core.lists.page import PAGE_NUMBER_ROWS, Page
from core.web import sparse
from db import reads_one_snapshot

View = TypeVar("View", bound=Callable[..., Any])
PAGE_SIZE, MAX_PAGE_SIZE = 10, 100
# Not filters: a cursor holds none of them (``fields`` only shapes each row).
PAGING = ("page", "page_size", "cursor", "count", "fields")

# OpenAPI documentation of the headers of every list: @blp.response(..., headers=LIST_HEADERS).
LIST_HEADERS = {
    "Link": {
        "description": 'RFC 8288 links: rel="next" and rel="prev" (with a cursor), or '
        'rel="first", "prev", "next" and "last" (with page numbers)',
        "schema": {"type": "string"},
    },
    "X-Total-Count": {
        "description": "Number of matching rows, when it is known exactly",
        "schema": {"type": "integer"},
    },
    "X-Total-Count-Estimate": {
        "description": "The database planner's estimate of the matching rows, sent instead "
        "of X-Total-Count when no exact count was made (count=exact forces one)",
        "schema": {"type": "integer"},
    },
    "X-Pagination": {
        "description": "With page numbers: flask-smorest's pagination metadata as JSON "
        "(total, total_pages, first_page, last_page, page, previous_page, next_page)",
        "schema": {"type": "string"},
        "example": '{"total": 42, "total_pages": 5, "first_page": 1, "last_page": 5, '
        '"page": 2, "previous_page": 1, "next_page": 3}',
    },
}


@dataclass(frozen=True)
class Ranked:
    """A sort whose keys are computed per request from the filters (e.g. full-text
    relevance: ``lambda args: (rank(args["search"]).desc(), Item.id)``). It has no ``-``
    twin, is only valid with its ``requires`` filter, and is the default order when
    that filter is sent."""

    keys: Callable[[dict[str, Any]], Sequence[Any]]
    requires: str


@dataclass(frozen=True)
class Rows:
    """A list read as plain rows rather than ORM objects: ``shape`` gives the filtered
    Select the columns (and joins) of a row, ``load`` turns a page of rows into what
    the response dumps (it may read more in the list's transaction, e.g. tags). Both
    are given the ``fields`` the request asked for (None: all), to read only those."""

    shape: Callable[[Select[Any], frozenset[str] | None], Select[Any]]
    load: Callable[[Sequence[Row[Any]], frozenset[str] | None], list[Any]]


def _split(column: Any) -> Key:
    if isinstance(column, UnaryExpression) and column.modifier is desc_op:
        return column.element, True
    return column, False


class Listing:
    """The sorts of one list, and the paging that derives from them."""

    def __init__(
        self,
        sorts: dict[str, Sequence[Any] | Ranked],
        *,
        default: str | None = None,
        sortable: bool = True,
        read_whole: Sequence[str] = (),
        rows: Rows | None = None,
        start: Sequence[Any] | None = None,
    ) -> None:
        """``default``: the order without a ``sort`` (the table's first sort unless
        given, e.g. ``"-id"`` for newest first); ``sortable=False``: no ``sort``
        parameter, the list is always in the default order; ``read_whole``: filters
        whose few matches the database reads all of to order them (a text index's
        bitmap), so that a page counts them in its own statement (Page.run); ``rows``:
        read the list as plain rows (without it, the Select's first entity); ``start``:
        the key values before the first row, for a list whose every page links a next
        one, even the last or an empty one (a poller of GET /events resumes there)."""
        self.sorts = sorts
        self.sortable = sortable
        self.read_whole = read_whole
        self.rows = rows
        self.start = start
        self.default = default or next(iter(sorts))
        self._schemas: dict[tuple[Any, ...], type[ma.Schema]] = {}

    # --- the table -------------------------------------------------------------

    @property
    def choices(self) -> list[str]:
        names = []
        for name, keys in self.sorts.items():
            names += [name] if isinstance(keys, Ranked) else [name, f"-{name}"]
        return names

    def sort_of(self, args: dict[str, Any]) -> str:
        """The sort asked for, or the default: a Ranked sort whose filter is sent,
        else the table's first sort."""
        if args.get("sort"):
            return str(args["sort"])
        for name, keys in self.sorts.items():
            if isinstance(keys, Ranked) and args.get(keys.requires) is not None:
                return name
        return self.default

    def keys(self, sort: str, args: dict[str, Any]) -> list[Key]:
        entry = self.sorts[sort.lstrip("-")]
        columns = entry.keys(args) if isinstance(entry, Ranked) else entry
        keys = [_split(column) for column in columns]
        if sort.startswith("-"):
            keys = [(expr, not descending) for expr, descending in keys]
        return keys

    # --- the query schema -------------------------------------------------------

    def query_schema(
        self,
        filters: type[ma.Schema] = ma.Schema,
        *,
        paging: bool = True,
        shows: type[ma.Schema] | None = None,
    ) -> type[ma.Schema]:
        """``filters`` plus the paging parameters, ``sort`` and, with ``shows`` (the
        schema of a row), ``fields``; without ``paging`` (a CSV export of the whole
        list), ``sort`` only."""
        key = (filters, paging, shows)
        if key not in self._schemas:
            fields = self._fields()
            if not paging:
                fields = {k: v for k, v in fields.items() if k in ("sort", "_check_paging")}
            elif shows is not None:
                fields["fields"] = sparse.Fieldset(shows)
            name = filters.__name__ if paging else f"{filters.__name__}Sorted"
            self._schemas[key] = type(name, (filters,), fields)
        return self._schemas[key]

    def _fields(self) -> dict[str, Any]:
        listing = self
        fields: dict[str, Any] = {
            "page": ma.fields.Integer(
                validate=ma.validate.Range(min=1),
                metadata={
                    "description": "Page number (>= 1), for the first 10,000 rows; "
                    'without it, follow the cursor in Link rel="next"'
                },
            ),
            "page_size": ma.fields.Integer(
                load_default=PAGE_SIZE,
                validate=ma.validate.Range(min=1, max=MAX_PAGE_SIZE),
                metadata={"description": "Rows per page (1-100)", "example": PAGE_SIZE},
            ),
            "cursor": ma.fields.String(
                validate=ma.validate.Length(1, 2000),
                metadata={
                    "description": 'Opaque position from a Link rel="next"/"prev"; '
                    "only valid with the filters and sort it was made for"
                },
            ),
            "count": ma.fields.String(
                validate=ma.validate.OneOf(["exact"]),
                metadata={"description": "exact: X-Total-Count whatever it costs"},
            ),
        }
        if self.sortable:
            fields["sort"] = ma.fields.String(
                validate=ma.validate.OneOf(self.choices),
                metadata={
                    "description": "Sort key; prefix with - for descending "
                    f"(default {self.default})"
                },
            )

        def check_paging(_schema: ma.Schema, data: dict[str, Any], **_kwargs: Any) -> None:
            if "page" in data and "cursor" in data:
                raise ma.ValidationError("Send either page or cursor, not both.", "cursor")
            if "page" in data and (data["page"] - 1) * data["page_size"] >= PAGE_NUMBER_ROWS:
                raise ma.ValidationError(
                    f"Page numbers reach the first {PAGE_NUMBER_ROWS:,} rows. To go further, "
                    'send the request without page and follow its Link rel="next".',
                    "page",
                )
            entry = listing.sorts.get(data.get("sort", ""))
            if isinstance(entry, Ranked) and data.get(entry.requires) is None:
                message = f"sort={data['sort']} needs {entry.requires}."
                raise ma.ValidationError(message, "sort")

        fields["_check_paging"] = ma.validates_schema(check_paging)
        return fields

    # --- the view ---------------------------------------------------------------

    def paginate(
        self,
        blp: Any,
        filters: type[ma.Schema] = ma.Schema,
        *,
        fields: type[ma.Schema] | None = None,
    ) -> Callable[[View], View]:
        """Parses the query with ``filters`` and the paging parameters (and ``fields``
        of the schema ``fields``); the view gets the filters (``sort`` resolved) and
        returns a filtered, unordered Select."""

        def decorator(func: View) -> View:
            @wraps(func)
            def view(*args: Any, page_query: dict[str, Any], **kwargs: Any) -> Any:
                paging = {key: page_query.pop(key) for key in PAGING if key in page_query}
                sparse.use(paging.get("fields"))
                if self.sortable:
                    page_query["sort"] = self.sort_of(page_query)
                query = func(*args, page_query, **kwargs)
                return Page(self, query, page_query, paging).run()

            reads_one_snapshot(view)
            schema = self.query_schema(filters, shows=fields)
            parsed: View = blp.arguments(schema, location="query", arg_name="page_query")(view)
            return parsed

        return decorator


__all__ = ["COUNT_CAP", "LIST_HEADERS", "Listing", "Ranked", "Rows"]
