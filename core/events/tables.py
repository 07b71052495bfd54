"""The event tables as Core ``Table`` objects, for the relay's and the deliveries'
statements: they run many times a second, and the ORM's bulk paths cost more Python
per statement than the statements themselves (docs/events.md, "Where the CPU goes")."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from models import Delivery, Event, EventCounter, Webhook

COUNTER = cast(Table, EventCounter.__table__)
DELIVERIES = cast(Table, Delivery.__table__)
EVENTS = cast(Table, Event.__table__)
WEBHOOKS = cast(Table, Webhook.__table__)
