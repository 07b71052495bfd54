"""Webhooks: where the caller's events are sent, signed, retried (contract §11)."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Row, Select, func, select

from core.auth import audit, scopes
from core.auth.limits import refuse_past_limit
from core.auth.permissions import forbid, key_store, login_required, store_in_body
from core.auth.security import api_key
from core.events import delivery as deliveries
from core.events import relay, tasks
from core.events.addresses import UnsafeURLError, check_url
from core.lists.listing import LIST_HEADERS, Listing, Rows
from core.web.errors import abort
from core.web.smorest import Blueprint
from db import db
from models import Delivery, Event, Store, Webhook
from models.event import public_id
from resources.common import KEY_SHARE
from schemas import (
    DeliverySchema,
    WebhookCreatedSchema,
    WebhookCreateSchema,
    WebhookSchema,
    WebhookUpdateSchema,
)

blp = Blueprint("webhooks", __name__, url_prefix="/webhooks", description="Webhooks")

WEBHOOKS = Listing({"id": (Webhook.id,)}, sortable=False)
DELIVERY_COLUMNS = (*Delivery.__table__.c, Event.seq.label("event_seq"))


def _delivery_json(row: Row[Any]) -> dict[str, Any]:
    entry = {c.name: getattr(row, c.name) for c in Delivery.__table__.c}
    return entry | {"event_id": None if row.event_seq is None else public_id(row.event_seq)}


# The backlog of unnumbered events a test call numbers itself, at most, in rounds of
# relay.BATCH (2,000 events): its answer stays quick whatever the relay has to do.
TEST_NUMBERING_ROUNDS = 4


# The delivery log, newest first; served by the key (webhook_id, id).
DELIVERIES = Listing(
    {"id": (Delivery.id,)},
    default="-id",
    sortable=False,
    rows=Rows(
        lambda query, _fields: query, lambda rows, _fields: [_delivery_json(row) for row in rows]
    ),
)
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new webhook"}}


def _webhook(webhook_id: int, *, for_update: bool = False) -> Webhook:
    """The caller's webhook (admin: any; through an API key bound to a store: that
    store's only); another's is not found, as an unknown one."""
    lock = {"of": Webhook} if for_update else None
    webhook = db.session.get(Webhook, webhook_id, with_for_update=lock)
    if (
        webhook is None
        or not (current_user.is_admin or webhook.owner_id == current_user.id)
        or key_store() not in (None, webhook.store_id)
    ):
        abort(404, message=f"Webhook {webhook_id} not found.")
    return webhook


def _audit(action: str, webhook: Webhook, changes: audit.Changes) -> None:
    audit.record(action, "webhook", webhook.id, changes, store_id=webhook.store_id)


def _check_url(url: str) -> None:
    config = current_app.config
    try:
        check_url(
            url,
            allow_http=config["WEBHOOK_ALLOW_HTTP"],
            allow_private=config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"],
        )
    except UnsafeURLError as exc:
        abort(422, message=f"url: {exc}", errors={"json": {"url": [str(exc)]}})


def _check_store(store_id: int | None) -> None:
    scopes.check_store(api_key(), store_id)  # a key bound to a store: that store only
    if store_id is None:
        return
    store = db.session.get(Store, store_id, with_for_update=KEY_SHARE)  # held, as for an item
    if store is None:
        message = f"Store {store_id} does not exist."
        abort(422, message=message, errors={"json": {"store_id": [message]}})
    if store.owner_id != current_user.id and not current_user.is_admin:
        forbid(f"Store {store_id} is not yours: a webhook follows your own stores.")


def _types(events: list[str]) -> list[str]:
    """Each type once; "*" (every type) alone."""
    return ["*"] if "*" in events else list(dict.fromkeys(events))


@blp.route("")
class Webhooks(MethodView):
    @login_required(blp)
    @blp.response(200, WebhookSchema(many=True), headers=LIST_HEADERS)
    @WEBHOOKS.paginate(blp)
    def get(self, _args: dict[str, Any]) -> Select[Webhook]:
        """Your webhooks (admin: all)"""
        query = select(Webhook)
        if not current_user.is_admin:
            query = query.where(Webhook.owner_id == current_user.id)
        bound = key_store()  # an API key bound to a store: that store's webhooks
        return query if bound is None else query.where(Webhook.store_id == bound)

    @login_required(blp)
    @store_in_body(_check_store)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookCreatedSchema, headers=LOCATION)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(409, response="CONFLICT", description="WEBHOOK_MAX_PER_USER webhooks")
    def post(self, data: dict[str, Any]) -> tuple[Webhook, int, dict[str, str]]:
        """Send your events to a URL; the answer holds the signing secret, once"""
        _check_store(data.get("store_id"))
        _check_url(data["url"])
        refuse_past_limit(Webhook, current_user.id, "WEBHOOK_MAX_PER_USER", "webhooks")
        webhook = Webhook(
            owner_id=current_user.id,
            url=data["url"],
            events=_types(data["events"]),
            store_id=data.get("store_id"),
            description=data.get("description"),
            enabled=data.get("enabled", True),
            secret=deliveries.new_secret(),
            consecutive_failures=0,
        )
        db.session.add(webhook)
        db.session.flush()
        _audit("webhook.created", webhook, audit.created(WebhookSchema().dump(webhook)))
        db.session.commit()
        location = url_for("webhooks.WebhookById", webhook_id=webhook.id)
        return webhook, 201, {"Location": location}


@blp.route("/<id:webhook_id>")
class WebhookById(MethodView):
    @login_required(blp)
    @blp.response(200, WebhookSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, webhook_id: int) -> Webhook:
        """One of your webhooks"""
        return _webhook(webhook_id)

    @login_required(blp)
    @blp.arguments(WebhookUpdateSchema)
    @blp.response(200, WebhookSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def patch(self, data: dict[str, Any], webhook_id: int) -> Webhook:
        """Change a webhook (enabling it again clears its failure count)"""
        webhook = _webhook(webhook_id, for_update=True)
        before = WebhookSchema().dump(webhook)
        if "url" in data:
            _check_url(data["url"])
        if "events" in data:
            data["events"] = _types(data["events"])
        if data.get("enabled") and not webhook.enabled:
            webhook.consecutive_failures = 0
        for key, value in data.items():
            setattr(webhook, key, value)
        db.session.flush()
        changes = audit.updated(before, WebhookSchema().dump(webhook))
        if changes:
            _audit("webhook.updated", webhook, changes)
        db.session.commit()
        return webhook

    @login_required(blp)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, webhook_id: int) -> None:
        """Delete a webhook and its delivery log"""
        webhook = _webhook(webhook_id, for_update=True)
        _audit("webhook.deleted", webhook, audit.deleted(WebhookSchema().dump(webhook)))
        db.session.delete(webhook)
        db.session.commit()


@blp.route("/<id:webhook_id>/test")
class WebhookTest(MethodView):
    @login_required(blp)
    @blp.response(202, DeliverySchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, webhook_id: int) -> dict[str, Any]:
        """Send a `webhook.test` event to this webhook now; answers its pending attempt"""
        attempt = deliveries.send_test(_webhook(webhook_id))
        db.session.commit()
        # Its event numbered now (with the events committed before it), which makes
        # its attempt due and queues it; unless a relay running meanwhile did. A
        # backlog past TEST_NUMBERING_ROUNDS is the relay's (a big import's events):
        # the attempt is answered without its event's id, due once the relay is there.
        for _round in range(TEST_NUMBERING_ROUNDS):
            event = db.session.get_one(Event, attempt.event_id, populate_existing=True)
            if event.seq is not None:
                break
            numbered, made = relay.sequence()
            tasks.queue_deliveries(made)
            if numbered < relay.BATCH:
                break
        return _delivery_json(_row_of(webhook_id, attempt.id))


def _row_of(webhook_id: int, delivery_id: int) -> Row[Any]:
    """The attempt a call just committed, read back: 404 if its webhook was deleted
    meanwhile (its log goes with it)."""
    row = db.session.execute(
        select(*DELIVERY_COLUMNS)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.id == delivery_id)
    ).one_or_none()
    if row is None:
        abort(404, message=f"Webhook {webhook_id} not found.")
    return row


@blp.route("/<id:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @login_required(blp)
    @blp.response(200, DeliverySchema(many=True), headers=LIST_HEADERS)
    @blp.alt_response(404, response="NOT_FOUND")
    @DELIVERIES.paginate(blp)
    def get(self, _args: dict[str, Any], webhook_id: int) -> Select[Any]:
        """A webhook's delivery attempts, newest first"""
        _webhook(webhook_id)
        return (
            select(*DELIVERY_COLUMNS)
            .join(Event, Event.id == Delivery.event_id)
            .where(Delivery.webhook_id == webhook_id)
        )


@blp.route("/<id:webhook_id>/deliveries/<id:delivery_id>/retry")
class DeliveryRetry(MethodView):
    @login_required(blp)
    @blp.response(202, DeliverySchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, webhook_id: int, delivery_id: int) -> dict[str, Any]:
        """Send that attempt's event again now (one attempt); answers it, pending"""
        webhook = _webhook(webhook_id)
        earlier = db.session.get(Delivery, delivery_id)
        if earlier is None or earlier.webhook_id != webhook.id:
            abort(404, message=f"Webhook {webhook_id} has no delivery {delivery_id}.")
        event = db.session.get_one(Event, earlier.event_id)
        # The webhook's row, as writing a failure locks it before numbering its retry
        # (core/events/delivery.py): one numbers after the other, never the same.
        db.session.execute(
            select(Webhook.id).where(Webhook.id == webhook.id).with_for_update(key_share=True)
        )
        last = db.session.scalar(
            select(func.max(Delivery.attempt)).where(
                Delivery.webhook_id == webhook.id, Delivery.event_id == event.id
            )
        )
        attempt = deliveries.send_now(webhook, event, attempt=(last or 0) + 1)
        db.session.commit()
        tasks.queue_deliveries([(webhook.id, attempt.id)])
        return _delivery_json(_row_of(webhook_id, attempt.id))
