"""The yardstick of `make bench-scale`: GET /items/<id> hand-written in a few lines of
Flask with one SQL statement, and none of the service's features (no schema, ETag,
rate limit, logging, security headers). Served by gunicorn like the service:

    DATABASE_URL=postgresql://... gunicorn -w 2 "bench.minimal:app"

As most hand-written endpoints do, it reads inside the transaction that SQLAlchemy
opens (BEGIN, SELECT, ROLLBACK: three round trips). MINIMAL_AUTOCOMMIT=1 reads in
autocommit instead (one round trip), as the service's GET /items/{id} does.
"""

from __future__ import annotations

import os

from flask import Flask, Response, abort, jsonify
from sqlalchemy import create_engine, text

app = Flask(__name__)
engine = create_engine(
    os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1),
    pool_size=5,
    **({"isolation_level": "AUTOCOMMIT"} if os.environ.get("MINIMAL_AUTOCOMMIT") else {}),
)
ITEM = text(
    """
    SELECT i.id, i.name, i.description, i.price, i.store_id, s.name AS store_name,
           i.created_at, i.updated_at,
           coalesce((SELECT json_agg(json_build_object('id', t.id, 'name', t.name) ORDER BY t.id)
                     FROM item_tags it JOIN tags t ON t.id = it.tag_id
                     WHERE it.item_id = i.id), '[]') AS tags
    FROM items i JOIN stores s ON s.id = i.store_id
    WHERE i.id = :id
    """
)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/<int:item_id>")
def item(item_id: int) -> Response:
    with engine.connect() as conn:
        row = conn.execute(ITEM, {"id": item_id}).mappings().first()
    if row is None:
        abort(404)
    return jsonify(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        price=float(row["price"]),
        store_id=row["store_id"],
        store={"id": row["store_id"], "name": row["store_name"]},
        tags=row["tags"],
        created_at=row["created_at"].isoformat(),
        updated_at=row["updated_at"].isoformat(),
    )
