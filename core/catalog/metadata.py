"""`metadata` (§13): the integrator's key-value pairs on items and stores. PATCH
merges what it sends into what is there (a key set to null is removed); PUT and
POST replace it. The bound holds after the merge."""

from __future__ import annotations

from collections.abc import Mapping

from core.web.fields import MAX_METADATA_KEYS


class TooManyKeysError(ValueError):
    pass


def merged(current: Mapping[str, str] | None, changes: Mapping[str, str | None]) -> dict[str, str]:
    """``current`` with ``changes`` applied: new values set, null values removed.
    A new dict (so that the ORM sees the change)."""
    result = dict(current or {})
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > MAX_METADATA_KEYS:
        raise TooManyKeysError(
            f"At most {MAX_METADATA_KEYS} keys after the merge; this would leave {len(result)}."
        )
    return result


def replaced(sent: Mapping[str, str | None] | None) -> dict[str, str]:
    """What POST and PUT store: the keys sent, without those set to null."""
    return merged({}, sent or {})
