"""The tables, one module each."""

from models.api_key import SCOPES, ApiKey
from models.audit_entry import AuditEntry
from models.event import Event, EventCounter
from models.idempotency_key import IdempotencyKey
from models.item import Item, item_tags
from models.job import Job, JobChunk
from models.password_reset import PasswordReset
from models.revoked_token import RevokedToken
from models.stock_movement import DELTA_REASONS, REASONS, StockMovement
from models.store import Store
from models.tag import Tag
from models.user import ROLES, User, new_token_key
from models.webhook import DELIVERY_STATUSES, Delivery, Webhook

__all__ = [
    "DELIVERY_STATUSES",
    "DELTA_REASONS",
    "REASONS",
    "ROLES",
    "SCOPES",
    "ApiKey",
    "AuditEntry",
    "Delivery",
    "Event",
    "EventCounter",
    "IdempotencyKey",
    "Item",
    "Job",
    "JobChunk",
    "PasswordReset",
    "RevokedToken",
    "StockMovement",
    "Store",
    "Tag",
    "User",
    "Webhook",
    "item_tags",
    "new_token_key",
]
