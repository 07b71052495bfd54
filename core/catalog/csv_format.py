"""The catalog as CSV (§9): the export's columns and cell rules, shared by the
export (resources/exports.py) and the import (core/catalog/csv_import.py), so that an export
re-imports unchanged."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

COLUMNS = (
    "id",
    "name",
    "description",
    "price",
    "stock",
    "store_id",
    "tags",
    "created_at",
    "updated_at",
    # §13, after the columns of §9, so that a reader of those finds them where they were.
    "sku",
    "status",
    "low_stock_threshold",
)
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV
# injection"): such text is written with a leading ' , which the import strips.
FORMULA_STARTS = ("=", "+", "-", "@", "'", "\t", "\r")


def neutralize(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def restore(cell: str) -> str:
    """A cell as the export wrote it, back to its text."""
    return cell[1:] if cell.startswith("'") else cell


def _timestamp(value: datetime) -> str:
    if value.utcoffset():  # a session in another time zone; UTC values are written as is
        value = value.astimezone(UTC)
    return value.isoformat()


class Writer:
    """Rows to CSV text, a chunk at a time (RFC 4180: CRLF, quotes where needed)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\r\n")

    def header(self) -> str:
        return self.rows([COLUMNS], plain=True)

    def rows(self, rows: Iterable[Sequence[Any]], *, plain: bool = False) -> str:
        self.buffer.seek(0)
        self.buffer.truncate()
        if plain:
            self.writer.writerows(rows)
        else:
            self.writer.writerows(self._cells(row) for row in rows)
        return self.buffer.getvalue()

    @staticmethod
    def _cells(row: Sequence[Any]) -> tuple[Any, ...]:
        """``row``: id, name, description, price (a NUMERIC(12,2), so its text has two
        decimals), stock, store_id, tag names joined by |, created_at, updated_at, sku,
        status, low_stock_threshold."""
        item_id, name, description, price, stock, store_id, tags, created, updated = row[:9]
        sku, status, threshold = row[9:12]
        return (
            item_id,
            neutralize(name),
            neutralize(description),
            price,
            stock,
            store_id,
            neutralize(tags),
            _timestamp(created),
            _timestamp(updated),
            neutralize(sku),
            status,
            "" if threshold is None else threshold,
        )


def example() -> str:
    """An export of two items, written as an export writes them: the example of the
    CSV bodies in the OpenAPI document (a download's, an import's)."""
    created = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    writer = Writer()
    milk = (1, "Milk", "1 litre, whole", "1.50", 12, 1, "dairy|fresh", created, created)
    eggs = (2, "Eggs, free range", None, "3.20", 0, 1, None, created, created)
    rows = [(*milk, "MILK-1L-WHOLE", "active", 5), (*eggs, None, "active", None)]
    return writer.header() + writer.rows(rows)
