"""Events: what changed in the caller's stores, in commit order (contract §10)."""

from __future__ import annotations

import re
from typing import Any

from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, select

from core.auth.permissions import login_required
from core.auth.security import api_key
from core.events import outbox
from core.jobs.document import job_document
from core.lists.listing import LIST_HEADERS, Listing
from core.web.errors import abort
from core.web.smorest import Blueprint
from db import db
from models import Event
from schemas import (
    EventQuerySchema,
    EventSchema,
    ItemRecordSchema,
    JobSchema,
    StockMovementSchema,
    StoreRecordSchema,
    TagRecordSchema,
    WebhookSchema,
)

blp = Blueprint("events", __name__, url_prefix="/events", description="Events: what changed")

# What an event's data.object is: each resource as its GET returns it, without its
# links (an event is the same whichever path, or command, made it).
for table, schema in (
    ("items", ItemRecordSchema()),
    ("stores", StoreRecordSchema()),
    ("tags", TagRecordSchema()),
    ("stock_movements", StockMovementSchema()),
    ("webhooks", WebhookSchema()),
):
    outbox.register_serializer(table, schema.dump)
# A job as GET /jobs/{id} shows it to its creator, the one its events are for (§16).
outbox.register_serializer(
    "jobs", lambda job: JobSchema().dump(job_document(job, reader=job.user_id))
)

PUBLIC_ID = re.compile(r"evt_([0-9]{1,18})")

# Oldest first, by position; every page links a next one (a poller resumes there).
EVENTS = Listing(
    {"seq": (Event.seq,)},
    sortable=False,
    start=(0,),
)


def visible() -> Select[Event]:
    """Listed events: numbered ones, of the caller's stores (admin: all); through an
    API key bound to a store, that store's only."""
    query = select(Event).where(Event.seq.is_not(None))
    if not current_user.is_admin:
        query = query.where(Event.owner_id == current_user.id)
    key = api_key()
    if key is not None and key["store_id"] is not None:
        query = query.where(Event.store_id == key["store_id"])
    return query


@blp.route("")
class Events(MethodView):
    @login_required(blp)
    @blp.response(200, EventSchema(many=True), headers=LIST_HEADERS)
    @EVENTS.paginate(blp, EventQuerySchema)
    def get(self, args: dict[str, Any]) -> Select[Event]:
        """Events of your stores (admin: all), oldest first; follow Link rel="next" """
        query = visible()
        if args.get("type"):
            query = query.where(Event.type.in_(args["type"]))
        if "store_id" in args:
            query = query.where(Event.store_id == args["store_id"])
        if "created_after" in args:
            query = query.where(Event.created_at > args["created_after"])
        return query


@blp.route("/<event_id>")
class EventById(MethodView):
    @login_required(blp)
    @blp.response(200, EventSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, event_id: str) -> Event:
        """One event"""
        match = PUBLIC_ID.fullmatch(event_id)
        event = None
        if match:
            event = db.session.scalar(visible().where(Event.seq == int(match.group(1))))
        if event is None:
            abort(404, message=f"Event {event_id} not found.")
        return event
