"""Command-line tasks on accounts and kept state: ``flask create-admin``,
``flask blocklist purge``, ``flask idempotency purge``, ``flask audit purge``."""

from __future__ import annotations

from typing import Any

import click
import marshmallow as ma
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError

from blocklist import get_blocklist
from core.auth import audit
from core.auth.passwords import hash_password, password_problems
from core.web.fields import Email, Password, Username
from core.web.idempotency import get_store as get_idempotency_store
from db import db
from models import User

# The rules of POST /register, from the same field definitions.
ACCOUNT = ma.Schema.from_dict(
    {"username": Username(required=True), "email": Email(required=True), "password": Password()}
)()


def sentences(messages: Any) -> str:
    """A schema's errors as a person reads them: ``Password: Length must be ...``,
    one field after the other, in the order of the options."""
    if not isinstance(messages, dict):
        return " ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
    order = {name: i for i, name in enumerate(("username", "email", "password"))}
    return " ".join(
        f"{name.capitalize()}: {sentences(problems).rstrip('.')}."
        for name, problems in sorted(messages.items(), key=lambda kv: order.get(kv[0], 9))
    )


@click.command("create-admin")
@with_appcontext
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_admin(username: str, email: str, password: str) -> None:
    """Create an admin user (the first admin has to come from here)."""
    try:
        data = ACCOUNT.load({"username": username, "email": email, "password": password})
    except ValidationError as exc:
        raise click.ClickException(f"No admin created. {sentences(exc.messages)}") from None
    # The operator decides here (a first admin, a script): the rules of /register
    # are a warning, not a refusal.
    problems = password_problems(data["password"], username=username, emails=[email])
    if problems:
        click.echo(f"Warning: weak password: {' '.join(problems)}", err=True)
    user = User(
        username=data["username"],
        email=data["email"],
        password_hash=hash_password(data["password"]),
        role="admin",
    )
    db.session.add(user)
    try:
        db.session.flush()
        # An operator on the server: the entry's actor is the system, as for import-items.
        created = audit.created({"username": user.username, "email": user.email, "role": user.role})
        audit.record("user.created", "user", user.id, created, source=audit.SYSTEM)
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
    """Drop answers and abandoned claims past their expiry, in bounded batches."""
    batch = current_app.config["IDEMPOTENCY_PURGE_BATCH"]
    click.echo(f"Purged {get_idempotency_store().purge(batch)} expired keys.")


audit_cli = AppGroup("audit", help="The audit log.")


@audit_cli.command("purge")
def purge_audit() -> None:
    """Drop entries older than AUDIT_RETENTION_DAYS."""
    click.echo(f"Purged {audit.purge()} audit entries.")
