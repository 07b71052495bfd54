"""``flask seed``: realistic fake stores, items, tags and stock for demos and
benchmarks (Faker), written with a few bulk statements per chunk of items.

Fake data, not secrets: the standard ``random`` module is the right tool (and
``--seed`` makes a run repeatable)."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from faker import Faker
from sqlalchemy import func, insert, select

from core.catalog import stock
from db import BULK_TABLES, analyze, db
from models import Item, Store, Tag, User, item_tags
from models.types import utcnow

CHUNK = 1000
PRODUCTS = (
    "Apron", "Backpack", "Blanket", "Bottle", "Bowl", "Candle", "Chair", "Coffee",
    "Cushion", "Gloves", "Hat", "Jacket", "Jam", "Kettle", "Lamp", "Mug", "Notebook",
    "Olive Oil", "Pan", "Pen", "Plate", "Scarf", "Soap", "Socks", "Tea", "Towel",
    "Umbrella", "Vase", "Wallet", "Watch",
)  # fmt: skip
TAGS = (
    "bestseller", "eco", "gift", "handmade", "imported", "local", "new", "organic",
    "premium", "sale", "seasonal", "vegan",
)  # fmt: skip


def _store_names(fake: Faker, count: int) -> list[str]:
    taken = {name for (name,) in db.session.execute(select(func.lower(Store.name)))}
    names: list[str] = []
    while len(names) < count:
        name = f"{fake.company()} {fake.city_suffix().title()}"[:80]
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names


def _item_names(fake: Faker, count: int) -> list[str]:
    names: dict[str, str] = {}
    while len(names) < count:
        size = len(names)
        detail = fake.color_name() if size < 2000 else f"{fake.color_name()} No. {size}"
        name = f"{detail} {random.choice(PRODUCTS)}"
        names.setdefault(name.lower(), name)
    return list(names.values())


def seed(
    owner: User,
    stores: int,
    items: int,
    *,
    seed_value: int | None = None,
    progress: Callable[[int], None] = lambda _n: None,
) -> dict[str, int]:
    """``stores`` stores of ``owner`` with ``items`` items each; commits once."""
    fake = Faker()
    if seed_value is not None:
        Faker.seed(seed_value)
        random.seed(seed_value)
    totals = {"stores": 0, "items": 0, "tags": 0}
    for name in _store_names(fake, stores):
        now = utcnow()
        store_id = db.session.execute(
            insert(Store).returning(Store.id),
            {
                "name": name,
                "address": fake.address().replace("\n", ", ")[:255],
                "contact_email": fake.company_email(),
                "contact_phone": None,
                "owner_id": owner.id,
                "metadata_": {"crm_id": f"C-{random.randint(1000, 9999)}"},
                "created_at": now,
                "updated_at": now,
            },
        ).scalar_one()
        tag_names = random.sample(TAGS, k=min(len(TAGS), 6))
        tag_ids = (
            db.session.execute(
                insert(Tag).returning(Tag.id, sort_by_parameter_order=True),
                [{"name": tag, "store_id": store_id} for tag in tag_names],
            )
            .scalars()
            .all()
        )
        names = _item_names(fake, items)
        for start in range(0, len(names), CHUNK):
            _items(fake, store_id, names[start : start + CHUNK], list(tag_ids), start)
            progress(len(names[start : start + CHUNK]))
        totals["stores"] += 1
        totals["items"] += len(names)
        totals["tags"] += len(tag_ids)
    analyze(*BULK_TABLES)
    return totals


def _items(fake: Faker, store_id: int, names: list[str], tag_ids: list[int], first: int) -> None:
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "description": fake.sentence(nb_words=10) if random.random() < 0.8 else None,
            "price": Decimal(random.randint(50, 50_000)) / 100,
            "stock": random.choice((0, random.randint(1, 200))),
            "store_id": store_id,
            "created_at": now,
            "updated_at": now,
        }
        for name in names
    ]
    for position, row in enumerate(rows, first):  # §13: SKUs, some drafts and archived
        row["sku"] = f"SKU-{store_id}-{position:07d}"
        row["status"] = random.choices(("active", "draft", "archived"), (90, 6, 4))[0]
        row["low_stock_threshold"] = random.choice((None, 5, 10, 20))
        row["metadata_"] = {"origin": "seed"} if random.random() < 0.3 else {}
    ids = (
        db.session.execute(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows)
        .scalars()
        .all()
    )
    links = [
        {"item_id": item_id, "tag_id": tag_id}
        for item_id in ids
        for tag_id in random.sample(tag_ids, k=random.randint(0, 2))
    ]
    if links:
        db.session.execute(insert(item_tags), links)
    # Each item's stock is its first movement, a count, as the ledger requires.
    stock.initial_counts(
        {item_id: row["stock"] for item_id, row in zip(ids, rows, strict=True) if row["stock"]},
        reference="seed",
        user_id=None,
        now=now,
    )
