"""Users: the signed-in user, the admin's list, and account changes."""

from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user, get_jwt
from flask_smorest import abort
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from api import Blueprint
from auth import forbid, hash_password, login_required, require_admin
from db import db
from models import User, new_token_key
from resources.common import commit, get_or_404, icontains, paginate
from schemas import UserQuerySchema, UserSchema, UserUpdateSchema
from web import no_store

blp = Blueprint("users", __name__, url_prefix="/users", description="User accounts")
blp.after_request(no_store)


def _self_or_admin(user: User) -> None:
    if user.id != current_user.id and not current_user.is_admin:
        forbid("Only the user themself or an admin may do this.")


def _reject(field: str, message: str) -> None:
    abort(422, errors={"json": {field: [message]}})


def _admin_count() -> int:
    return db.session.scalar(select(func.count()).where(User.role == "admin"))


@blp.route("/me")
class Me(MethodView):
    @login_required(blp)
    @blp.response(200, UserSchema)
    def get(self):
        """The signed-in user"""
        return current_user


@blp.route("")
class Users(MethodView):
    @login_required(blp)
    @blp.arguments(UserQuerySchema, location="query")
    @blp.response(200, UserSchema(many=True))
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List users (admin only)"""
        require_admin()
        query = select(User).order_by(User.id)
        if "q" in args:
            query = query.where(
                or_(icontains(User.username, args["q"]), icontains(User.email, args["q"]))
            )
        return paginate(query, pagination_parameters)


@blp.route("/<id:user_id>")
class UserById(MethodView):
    @login_required(blp)
    @blp.response(200, UserSchema)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, user_id):
        """One user (the user themself or an admin)"""
        user = get_or_404(User, user_id)
        _self_or_admin(user)
        return user

    @login_required(blp)
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, data, user_id):
        """Change a user: the role (admin), the email or password (the user themself)

        Changing the email or the password needs a fresh token.
        """
        user = get_or_404(User, user_id)
        _self_or_admin(user)
        is_self = user.id == current_user.id
        if "role" in data:
            if not current_user.is_admin:
                _reject("role", "Only an admin may change a role.")
            if user.is_admin and data["role"] != "admin" and _admin_count() == 1:
                abort(409, message="This is the last admin; make another admin first.")
            user.role = data["role"]
        for field in ("email", "password"):
            if field in data and not is_self:
                _reject(field, f"Only the user themself may change their {field}.")
        if ("email" in data or "password" in data) and not get_jwt().get("fresh"):
            abort(
                401,
                message="Changing the email or password needs a fresh token: sign in again.",
                error="fresh_token_required",
            )
        if "email" in data:
            user.email = data["email"]
        if "password" in data:
            user.password_hash = hash_password(data["password"])
            user.token_key = new_token_key()  # every session ends: sign in again
        commit(conflict="That email is already registered.")
        return user

    @login_required(blp, fresh=True)
    @blp.response(204)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, user_id):
        """Delete a user (the user themself or an admin; fresh token)

        A user who still owns stores cannot be deleted: transfer or delete them first.
        """
        user = get_or_404(User, user_id)
        _self_or_admin(user)
        if user.is_admin and _admin_count() == 1:
            abort(409, message="This is the last admin; make another admin first.")
        db.session.delete(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            abort(409, message=f"User {user_id} still owns stores; transfer or delete them first.")
