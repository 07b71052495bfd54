"""The tables, one module each."""

from models.item import Item, item_tags
from models.revoked_token import RevokedToken
from models.store import Store
from models.tag import Tag
from models.user import ROLES, User, new_token_key

__all__ = [
    "ROLES",
    "Item",
    "RevokedToken",
    "Store",
    "Tag",
    "User",
    "item_tags",
    "new_token_key",
]
