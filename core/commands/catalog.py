"""Catalog commands: ``flask import-items`` (a CSV file into a store) and ``flask
seed`` (fake data). Both run from an install of requirements.txt alone; what only
they need (tqdm, Faker, the importer) is imported when they run, not by every worker."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from core.web.fields import MAX_ID
from db import db, iequals
from models import Store, User

PLAIN_EVERY = 10_000  # rows between two progress lines when not on a terminal


@contextmanager
def progress(total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; plain lines on stderr otherwise (logs, CI)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        # Drawn at the first progress, not before: a file refused at its header row
        # leaves no empty bar above the message.
        bars: list[Any] = []

        def update(n: int) -> None:
            if not bars:
                bars.append(tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr))
            bars[0].update(n)

        try:
            yield update
        finally:
            for bar in bars:
                bar.close()
        return
    done = {"count": 0, "said": 0}

    def advance(n: int) -> None:
        done["count"] += n
        if done["count"] - done["said"] >= PLAIN_EVERY:
            done["said"] = done["count"]
            click.echo(f"{done['count']:,} {unit}", err=True)

    yield advance


@click.command("import-items")
@with_appcontext
@click.argument("store_id", type=int)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and count, write nothing.")
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows, report the others.")
def import_items_command(store_id: int, file: Path, dry_run: bool, skip_invalid: bool) -> None:
    """Create or update a store's items from a CSV file (the export's columns)."""
    from core.catalog.csv_import import ImportConflictError, UnreadableFileError, import_items

    # Ids are 32-bit in the database: a larger number is no store (as in a URL), not
    # a query the driver cannot send (OverflowError, or PostgreSQL's out of range).
    store = db.session.get(Store, store_id) if 1 <= store_id <= MAX_ID else None
    if store is None:
        raise click.ClickException(f"Store {store_id} not found.")
    with file.open("rb") as raw, progress(file.stat().st_size, "B") as advance:
        position = {"at": 0}

        def read(_rows: int) -> None:
            # Bytes of the file read so far: a bar that ends at its size.
            now = raw.tell()
            advance(now - position["at"])
            position["at"] = now

        try:
            summary = import_items(
                store, raw, dry_run=dry_run, skip_invalid=skip_invalid, progress=read
            )
        except (UnreadableFileError, ImportConflictError) as exc:
            raise click.ClickException(str(exc)) from None
    for error in summary.lines():
        click.echo(error, err=True)
    if summary.invalid > len(summary.errors):
        click.echo(f"... and {summary.invalid - len(summary.errors)} more.", err=True)
    click.echo(summary_line(summary, dry_run=dry_run, skip_invalid=skip_invalid))
    if summary.invalid and not skip_invalid:
        sys.exit(1)


def summary_line(summary: Any, *, dry_run: bool, skip_invalid: bool) -> str:
    """What happened, in words: what was written, or why nothing was and what to do."""
    counts = f"{summary.created} created, {summary.updated} updated, {summary.unchanged} unchanged"
    rows = "row" if summary.invalid == 1 else "rows"
    if summary.invalid and not skip_invalid:
        valid = summary.created + summary.updated + summary.unchanged
        return (
            f"Nothing written: {summary.invalid} invalid {rows} (listed above). Fix them and "
            f"run again, or add --skip-invalid to import the {valid} valid "
            f"{'row' if valid == 1 else 'rows'} alone."
        )
    counts = f"{counts}, {summary.invalid} invalid" + (" (skipped)" if summary.invalid else "")
    if dry_run:
        return f"Dry run, nothing written. The file would give: {counts}."
    return f"Imported: {counts}."


@click.command("seed")
@with_appcontext
@click.option("--stores", type=click.IntRange(1, 10_000), default=3, show_default=True)
@click.option(
    "--items",
    type=click.IntRange(0, 1_000_000),
    default=50,
    show_default=True,
    help="Items per store.",
)
@click.option("--owner", help="Username of the stores' owner (default: the first admin).")
@click.option("--seed", "seed_value", type=int, help="Same number, same data.")
@click.option(
    "--in-production",
    is_flag=True,
    help="Seed although APP_ENV is production (a demo deployment).",
)
def seed_command(
    stores: int, items: int, owner: str | None, seed_value: int | None, in_production: bool
) -> None:
    """Fill the database with realistic fake stores, items, tags and stock (demos)."""
    from core.catalog.seed import seed

    if current_app.config["APP_ENV"] == "production" and not in_production:
        raise click.ClickException(
            "APP_ENV is production: the seed writes demo data with no events or audit "
            "entries, which webhooks, GET /events and the audit log never show. Pass "
            "--in-production to seed a demo deployment anyway."
        )
    query = select(User).order_by(User.id)
    # Usernames match as at login: in any case.
    query = (
        query.where(iequals(User.username, owner)) if owner else query.where(User.role == "admin")
    )
    user = db.session.scalars(query.limit(1)).first()
    if user is None:
        raise click.ClickException(
            f"No user {owner!r}."
            if owner
            else "No admin yet: run `flask create-admin` first, or pass --owner USERNAME."
        )
    with progress(stores * items, "items") as advance:
        totals = seed(user, stores, items, seed_value=seed_value, progress=advance)
    click.echo(
        f"Seeded {totals['stores']} stores, {totals['items']} items and {totals['tags']} tags "
        f"(owner {user.username!r})."
    )
