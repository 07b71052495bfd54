"""The ``flask`` commands: accounts.py (admins, purges), catalog.py (import, seed)."""

from __future__ import annotations

from flask import Flask

from core.commands.accounts import audit_cli, blocklist_cli, create_admin, idempotency_cli
from core.commands.catalog import import_items_command, seed_command


def init_app(app: Flask) -> None:
    for command in (
        create_admin,
        blocklist_cli,
        idempotency_cli,
        audit_cli,
        import_items_command,
        seed_command,
    ):
        app.cli.add_command(command)
