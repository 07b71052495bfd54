"""How many webhooks and API keys one user may hold: every table a client fills has a
bound, and each webhook is a fan-out of every event (Stripe allows 16 endpoints to an
account). Settings WEBHOOK_MAX_PER_USER and API_KEY_MAX_PER_USER."""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, func, select

from core.web.errors import abort
from db import db
from models import User


def refuse_past_limit(
    model: Any, owner_id: int, setting: str, what: str, *where: ColumnElement[bool]
) -> None:
    """409 ``limit_reached`` when the user already holds as many ``model`` rows (those
    ``where`` says count) as the config value ``setting`` allows. The user's row is
    locked first (until the commit), so that two requests at once are counted one
    after the other: FOR NO KEY UPDATE, which the foreign-key checks on users (FOR KEY
    SHARE: a batch's movement, a new job) do not wait for. FOR UPDATE made them wait,
    and deadlocked with a request holding a store this one's new row refers to."""
    most = current_app.config[setting]
    db.session.execute(select(User.id).where(User.id == owner_id).with_for_update(key_share=True))
    held = db.session.execute(
        select(func.count()).select_from(model).where(model.owner_id == owner_id, *where)
    ).scalar_one()
    if held >= most:
        abort(
            409,
            message=f"You have {held} {what}, the most one user may have "
            f"({setting}); delete one first.",
            error="limit_reached",
        )
