"""The tables, one module each."""

from models.audit_entry import AuditEntry
from models.idempotency_key import IdempotencyKey
from models.item import Item, item_tags
from models.password_reset import PasswordReset
from models.revoked_token import RevokedToken
from models.stock_movement import DELTA_REASONS, REASONS, StockMovement
from models.store import Store
from models.tag import Tag
from models.user import ROLES, User, new_token_key

__all__ = [
    "DELTA_REASONS",
    "REASONS",
    "ROLES",
    "AuditEntry",
    "IdempotencyKey",
    "Item",
    "PasswordReset",
    "RevokedToken",
    "StockMovement",
    "Store",
    "Tag",
    "User",
    "item_tags",
    "new_token_key",
]
