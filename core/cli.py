"""Command-line tasks: ``flask create-admin``, ``flask blocklist purge``,
``flask idempotency purge``; ``flask import-items`` and ``flask seed`` live in
core/catalog_cli.py."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError

from blocklist import get_blocklist
from core.catalog_cli import import_items_command, seed_command
from core.idempotency import get_store as get_idempotency_store
from core.security import hash_password
from db import db
from models import User
from schemas import RegisterSchema


@click.command("create-admin")
@with_appcontext
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_admin(username: str, email: str, password: str) -> None:
    """Create an admin user (the first admin has to come from here)."""
    try:
        data = RegisterSchema().load({"username": username, "email": email, "password": password})
    except ValidationError as exc:
        raise click.ClickException(f"invalid input: {exc.messages}") from None
    user = User(
        username=data["username"],
        email=data["email"],
        password_hash=hash_password(data["password"]),
        role="admin",
    )
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise click.ClickException(
            f"a user with username {username!r} or email {email!r} already exists"
        ) from None
    click.echo(f"Created admin {user.username!r} (id {user.id}).")


blocklist_cli = AppGroup("blocklist", help="Token revocation list.")


@blocklist_cli.command("purge")
def purge() -> None:
    """Drop revocations whose tokens have expired anyway."""
    click.echo(f"Purged {get_blocklist().purge()} expired entries.")


idempotency_cli = AppGroup("idempotency", help="Answers kept for Idempotency-Key retries.")


@idempotency_cli.command("purge")
def purge_idempotency() -> None:
    """Drop answers and abandoned claims past their expiry."""
    click.echo(f"Purged {get_idempotency_store().purge()} expired keys.")


def init_app(app: Flask) -> None:
    app.cli.add_command(create_admin)
    app.cli.add_command(blocklist_cli)
    app.cli.add_command(idempotency_cli)
    app.cli.add_command(import_items_command)
    app.cli.add_command(seed_command)
