"""The audit log: who changed what, from where (admins: all; owners: their stores)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import ColumnElement, Select, and_, case, or_, select
from sqlalchemy.orm import with_expression

from core.auth.permissions import login_required
from core.lists.listing import LIST_HEADERS, Listing
from core.web.http import no_store
from core.web.smorest import Blueprint
from models import ApiKey, AuditEntry, Store
from models.audit_entry import STORE_TARGETS
from schemas import AuditEntrySchema, AuditQuerySchema

blp = Blueprint("audit", __name__, url_prefix="/audit", description="The audit log")
blp.after_request(no_store)

# Oldest first; sort=-id for newest. Each filter has an index ending in id.
ENTRIES = Listing({"id": (AuditEntry.id,)})


@blp.route("")
class Audit(MethodView):
    @login_required(blp)
    @blp.response(200, AuditEntrySchema(many=True), headers=LIST_HEADERS)
    @ENTRIES.paginate(blp, AuditQuerySchema)
    def get(self, args: dict[str, Any]) -> Select[AuditEntry]:
        """The audit log: all of it for an admin, a store owner's stores' entries"""
        query = select(AuditEntry)
        if current_user.is_admin:
            query = query.options(with_expression(AuditEntry.shown_ip, AuditEntry.ip))
        else:
            owned = select(Store.id).where(Store.owner_id == current_user.id)
            query = query.where(
                AuditEntry.store_id.in_(owned), AuditEntry.target_type.in_(STORE_TARGETS)
            ).options(with_expression(AuditEntry.shown_ip, _own_ip(current_user.id)))
        for name in ("actor_id", "target_type", "target_id", "action"):
            if name in args:
                query = query.where(getattr(AuditEntry, name) == args[name])
        if "created_after" in args:
            query = query.where(AuditEntry.created_at > args["created_after"])
        return query


def _own_ip(user_id: int) -> ColumnElement[str | None]:
    """An entry's ip where the reader made the change (themselves or one of their
    keys), else null: a store's owner is not shown where an admin, or the store's
    previous owner, worked from."""
    keys = select(ApiKey.id).where(ApiKey.owner_id == user_id)
    own = or_(
        and_(AuditEntry.actor_type == "user", AuditEntry.actor_id == user_id),
        and_(AuditEntry.actor_type == "api_key", AuditEntry.actor_id.in_(keys)),
    )
    return case((own, AuditEntry.ip), else_=None)
