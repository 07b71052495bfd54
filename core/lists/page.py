"""One request's page of a Listing (see listing.py): its rows, its links and its counts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import request
from itsdangerous import BadSignature
from sqlalchemy import Row, Select, func, select

from core.lists import cursors
from core.lists.counting import COUNT_CAP, count_rows, estimate_rows
from db import db

if TYPE_CHECKING:
    from core.lists.cursors import Key
    from core.lists.listing import Listing

PAGE_NUMBER_ROWS = 10_000  # page numbers reach this far; cursors go on from there


class Page:
    """One request's page of a Listing: rows and headers."""

    def __init__(
        self, listing: Listing, query: Select[Any], filters: dict[str, Any], paging: dict[str, Any]
    ) -> None:
        self.listing = listing
        self.query = query
        self.filters = filters
        self.size: int = paging["page_size"]
        self.page: int | None = paging.get("page")
        self.count: str | None = paging.get("count")
        self.fields: frozenset[str] | None = paging.get("fields")
        self.keys = listing.keys(filters.get("sort") or listing.default, filters)
        self.fingerprint = cursors.fingerprint(filters)
        self.before = False  # a "prev" cursor: the rows before a position
        self.position: list[Any] | None = None
        self.estimate: int | None = None  # the planner's, once asked
        if "cursor" in paging:
            self._read_cursor(paging["cursor"])

    def _read_cursor(self, cursor: str) -> None:
        try:
            fingerprint, before, values = cursors.serializer().loads(cursor)
        except (BadSignature, ValueError, TypeError):
            cursors.bad_cursor("Not a cursor of this service (altered or damaged).")
        if fingerprint != self.fingerprint:
            cursors.bad_cursor(
                "This cursor belongs to other filters or another sort; send it with "
                "the query of the link it came from."
            )
        try:
            self.position = [
                cursors.decode(v, e) for v, (e, _) in zip(values, self.keys, strict=True)
            ]
        except (ValueError, TypeError, ArithmeticError):
            cursors.bad_cursor("Not a cursor of this list.")
        self.before = bool(before)

    def _cursor(self, values: Sequence[Any], *, before: bool) -> str:
        payload = [self.fingerprint, int(before), [cursors.encode(v) for v in values]]
        return str(cursors.serializer().dumps(payload))

    def _counts_with_page(self) -> bool:
        """A page from the top (a page number's OFFSET included) of a filter whose
        matches are all read anyway counts them in its own statement, a window over
        the same scan, when the planner expects at most COUNT_CAP of them: a second
        statement would repeat the scan (contract §5, rule 3, in one statement)."""
        if self.position is not None or self.count == "exact":
            return False
        if not any(self.filters.get(name) for name in self.listing.read_whole):
            return False
        self.estimate = estimate_rows(self.query)
        return self.estimate is not None and self.estimate <= COUNT_CAP

    def _fetch(self, query: Select[Any]) -> tuple[list[Row[Any]], float]:
        """The page's rows, and how long its statement alone took (ms: the transaction
        is begun before, the rows are built after)."""
        connection = db.session.connection()
        started = time.perf_counter()
        if self.listing.rows is None:
            result = db.session.execute(query)
        else:  # plain rows, on the session's connection (its transaction, its snapshot)
            result = connection.execute(query)
        took = (time.perf_counter() - started) * 1000
        return list(result), took

    def run(self) -> tuple[list[Any], dict[str, str]]:
        keys = self.keys if not self.before else [(e, not d) for e, d in self.keys]
        labels = [f"_key{i}" for i in range(len(keys))]
        counted = self._counts_with_page()
        rows, took = self._fetch(self._statement(keys, labels, counted).limit(self.size + 1))
        more = len(rows) > self.size
        rows = rows[: self.size]
        if self.before:
            rows.reverse()
        rows_of = self.listing.rows
        items = rows_of.load(rows, self.fields) if rows_of else [row[0] for row in rows]
        first = [rows[0]._mapping[k] for k in labels] if rows else None
        last = [rows[-1]._mapping[k] for k in labels] if rows else None
        total, estimate = self._total(rows, more=more, counted=counted, took=took)
        headers: dict[str, str] = {}
        if total is not None:
            headers["X-Total-Count"] = str(total)
        else:
            headers["X-Total-Count-Estimate"] = str(estimate)
        if self.page is not None:
            links = self._page_links(total, more, last, headers)
        else:
            links = self._cursor_links(more, first, last)
        if links:
            headers["Link"] = ", ".join(_link(rel, params) for rel, params in links)
        return items, headers

    def _statement(self, keys: list[Key], labels: list[str], counted: bool) -> Select[Any]:
        """The page's SELECT: its rows, their sort keys (labelled), the total if
        ``counted``, after the cursor's position or at the page's offset."""
        rows_of = self.listing.rows
        query = rows_of.shape(self.query, self.fields) if rows_of else self.query
        query = query.add_columns(
            *(expr.label(k) for (expr, _), k in zip(keys, labels, strict=True))
        )
        if counted:
            return self._counted(query, keys, labels)
        if self.position is not None:
            query = query.where(cursors.after(keys, self.position))
        query = query.order_by(*(expr.desc() if d else expr.asc() for expr, d in keys))
        if self.page is not None:
            query = query.offset((self.page - 1) * self.size)
        return query

    def _counted(self, query: Select[Any], keys: list[Key], labels: list[str]) -> Select[Any]:
        """A page from the top that counts its matches (``_counts_with_page``): the
        matches read first, on their own, then counted and put in order. One SELECT
        with the window, its ORDER BY and LIMIT led PostgreSQL (15) to walk a sort's
        index and filter every row of the table for a few matches: it costs the window,
        which reads to the end, as if the LIMIT stopped it early (a search matching
        nothing, sorted by price: 3-4 s at a million items). Read as a CTE of their
        own, the matches come from the filter's index (the text's bitmap)."""
        matches = query.cte("matches").prefix_with("MATERIALIZED")
        order = [
            matches.c[k].desc() if d else matches.c[k].asc()
            for (_, d), k in zip(keys, labels, strict=True)
        ]
        counted = select(matches, func.count().over().label("_total")).order_by(*order)
        if self.page is not None:
            counted = counted.offset((self.page - 1) * self.size)
        return counted

    def _total(
        self, rows: list[Row[Any]], *, more: bool, counted: bool, took: float
    ) -> tuple[int | None, int | None]:
        """The exact total, or else an estimate, from what the page itself shows
        when it can (counting only when it cannot)."""
        # A page that starts at the top and is not full holds the whole list.
        known = len(rows) if self.position is None and not self.page and not more else None
        if self.page and rows and not more:
            known = (self.page - 1) * self.size + len(rows)
        if counted and rows:
            known = rows[0]._mapping["_total"]
        if counted and known is not None and known > COUNT_CAP:  # as a capped count's
            return None, max(self.estimate or 0, known)
        return count_rows(
            self.query,
            known,
            exact=self.count == "exact",
            estimate=self.estimate,
            page_ms=took,
        )

    def _cursor_links(
        self, more: bool, first: list[Any] | None, last: list[Any] | None
    ) -> list[tuple[str, dict[str, Any]]]:
        has_next = more if not self.before else self.position is not None
        has_prev = self.position is not None if not self.before else more
        links: list[tuple[str, dict[str, Any]]] = []
        if has_next and last is not None:
            links.append(("next", {"cursor": self._cursor(last, before=False)}))
        elif self.listing.start is not None and not self.before:
            # The end, for now: the next page starts after the last row seen.
            resume = last or self.position or list(self.listing.start)
            links.append(("next", {"cursor": self._cursor(resume, before=False)}))
        if has_prev and first is not None:
            links.append(("prev", {"cursor": self._cursor(first, before=True)}))
        return links

    def _page_links(
        self, total: int | None, more: bool, last: list[Any] | None, headers: dict[str, str]
    ) -> list[tuple[str, dict[str, Any]]]:
        assert self.page is not None
        page, size = self.page, self.size
        meta: dict[str, int] = {}
        if total is not None:
            pages = -(-total // size)
            meta |= {"total": total, "total_pages": pages}
            if pages:
                meta |= {"first_page": 1, "last_page": pages}
        else:
            meta["first_page"] = 1
        if total is None or page <= meta.get("last_page", 0):
            meta["page"] = page
            if page > 1:
                meta["previous_page"] = page - 1
            if more:
                meta["next_page"] = page + 1
        headers["X-Pagination"] = json.dumps(meta)
        links: list[tuple[str, dict[str, Any]]] = []
        if "first_page" in meta:
            links.append(("first", {"page": 1}))
        if "previous_page" in meta:
            links.append(("prev", {"page": meta["previous_page"]}))
        if more and last is not None:
            if page * size < PAGE_NUMBER_ROWS:
                links.append(("next", {"page": page + 1}))
            else:  # beyond page numbers' reach: the cursor goes on from here
                links.append(("next", {"cursor": self._cursor(last, before=False)}))
        if "last_page" in meta and (meta["last_page"] - 1) * size < PAGE_NUMBER_ROWS:
            links.append(("last", {"page": meta["last_page"]}))
        return links


def _link(rel: str, params: dict[str, Any]) -> str:
    """A root-relative URL of this list, keeping every other query parameter."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "cursor")]
    query = urlencode([*args, *params.items()])
    return f'<{request.script_root}{request.path}?{query}>; rel="{rel}"'
