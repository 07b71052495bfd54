"""Password reset: ask for a link by mail, then set a new password with its token."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import ValidationError

from core.auth import audit
from core.auth.passwords import check_password_quality
from core.auth.reset import (
    InvalidResetTokenError,
    find_reset,
    redeem,
    request_reset,
    reset_rate_limits,
)
from core.web.errors import abort
from core.web.http import no_store
from core.web.smorest import Blueprint
from db import db
from models import User
from schemas import MessageSchema, PasswordResetConfirmSchema, PasswordResetRequestSchema

blp = Blueprint(
    "password_reset", __name__, description="Reset a forgotten password through a mailed link"
)
blp.after_request(no_store)

ASKED = "If an account has this address, a link to reset its password is on its way."


@blp.route("/password-reset")
class PasswordResetRequest(MethodView):
    decorators = reset_rate_limits(per_address=True)

    @blp.arguments(PasswordResetRequestSchema)
    @blp.response(202, MessageSchema)
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> dict[str, str]:
        """Mail a link to reset the password (the same answer for any address)"""
        request_reset(data["email"])
        return {"message": ASKED}


@blp.route("/password-reset/confirm")
class PasswordResetConfirm(MethodView):
    decorators = reset_rate_limits(per_address=False)

    @blp.arguments(PasswordResetConfirmSchema)
    @blp.response(204)
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> None:
        """Set a new password with the mailed token; every session of the user ends"""
        try:
            reset = find_reset(data["token"])
            user = db.session.get_one(User, reset.user_id)
            try:
                check_password_quality(
                    data["new_password"],
                    username=user.username,
                    emails=[user.email],
                    field="new_password",
                )
            except ValidationError as exc:
                # marshmallow leaves normalized_messages unannotated.
                messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
                abort(422, errors={"json": messages})
            redeem(reset, user, data["new_password"])
            # The mailed token authenticates its holder as the user, as a token does.
            changes = {"password": audit.SECRET_CHANGE}
            holder = ("user", user.id)
            audit.record("user.password_reset", "user", user.id, changes, as_actor=holder)
        except InvalidResetTokenError:
            abort(
                422,
                message="This reset link was used, has expired or is unknown; ask for a new one.",
                error="invalid_reset_token",
            )
        db.session.commit()
