"""The application factory: config, extensions, error envelope, blueprints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

import blocklist
from core import commands
from core.auth.passwords import init_passwords
from core.auth.security import check_scopes
from core.events import tasks as event_tasks
from core.jobs.worker import celery_init_app
from core.web import http, idempotency, metrics, negotiation, tracing, versions
from core.web import request_log as request_logging
from core.web.config import Config, config_from_env
from core.web.errors import register_error_handlers
from core.web.extensions import api, cors, jwt, limiter, mail, migrate
from core.web.legacy import LegacyPaths
from core.web.openapi import OperationIds, SchemaDoc
from core.web.smorest import IdConverter, swagger_assets
from core.web.versions import VersionPrefix
from db import close_session, db, engine_options
from resources import (
    api_keys,
    audit,
    batch,
    events,
    exports,
    health,
    imports,
    index,
    items,
    jobs,
    password_reset,
    sessions,
    stock,
    stores,
    tags,
    users,
    webhooks,
)

MIGRATIONS_DIR = str(Path(__file__).resolve().parent / "migrations")

API_DESCRIPTION = """Stores, the items they sell, and tags to group and search them.

Reads of the catalog are public. Sign in with `POST /login`, then press
**Authorize** and paste the `access_token`. Errors always come as
`{"code", "status", "message"}`, with `errors` on 400/422 and `error` on 401/403,
or as RFC 9457 problem details with `Accept: application/problem+json`.

Each path is listed once and served at both `servers`: `/items` is `/v1/items`
(version 1, the default; `Accept: application/vnd.stores.v1+json` selects it too).
Unknown query parameters are refused (422); lists of items also answer
`Accept: text/csv` with their CSV export.
"""


class JSONKeysInOrder(DefaultJSONProvider):
    """Responses list their fields in the order the schemas declare them."""

    sort_keys = False


def create_app(config: Config | None = None) -> Flask:
    config = config if config is not None else config_from_env()
    config.validate()
    app = Flask(__name__, static_folder=None, instance_path=config.INSTANCE_PATH)
    # An empty path segment (/items//3) is no route: 404 (core/web/http.py). Werkzeug
    # would merge the slashes by a redirect (an HTML 308 whose Location it builds from
    # the Host header). Set before any rule is added: each rule copies it then.
    app.url_map.merge_slashes = False
    app.config.from_object(config)
    app.json = JSONKeysInOrder(app)

    for step in BOOT_ORDER:
        step.init(app)
    register_blueprints()
    register_error_handlers(app)
    register_middleware(app)
    commands.init_app(app)
    celery_init_app(app)
    event_tasks.init_app(app)
    request_logging.warn_once(app.logger, config.warnings())
    return app


def init_database(app: Flask) -> None:
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    if app.config["METRICS_ENABLED"] and "pool_size" in app.config["SQLALCHEMY_ENGINE_OPTIONS"]:
        app.config["SQLALCHEMY_ENGINE_OPTIONS"]["poolclass"] = metrics.MeasuredQueuePool
    db.init_app(app)
    with app.app_context():
        metrics.init_pool(app, db.engine)
    app.teardown_appcontext(close_session)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True, render_as_batch=True)


def init_tokens(app: Flask) -> None:
    jwt.init_app(app)
    init_passwords(app)
    mail.init_app(app)
    blocklist.init_app(app)


def init_cors(app: Flask) -> None:
    if app.config["CORS_ORIGINS"]:
        cors.init_app(app, origins=app.config["CORS_ORIGINS"], **http.CORS_OPTIONS)


def init_openapi(app: Flask) -> None:
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(swagger_assets)
    api.init_app(
        app,
        spec_kwargs={
            "info": {"description": API_DESCRIPTION},
            "extra_plugins": [idempotency.IdempotencyDoc(), SchemaDoc(), OperationIds()],
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    negotiation.document(api.spec)


def scope_checks(app: Flask) -> None:
    app.before_request(check_scopes)


@dataclass(frozen=True)
class Step:
    """One step of wiring the app; ``after`` says why it stands where it does."""

    init: Callable[[Flask], None]
    after: str


# Flask runs before_request hooks in the order they were registered, after_request
# and teardown hooks in the reverse order: where a step stands is part of what it
# does. create_app runs the steps in this order (tests/api/test_http.py checks the
# hooks it leaves).
BOOT_ORDER: tuple[Step, ...] = (
    Step(request_logging.init_app, "first: every later hook can rely on the request id"),
    Step(metrics.init_app, "before the limiter reads its breach callback"),
    Step(tracing.init_app, "before the engines are made: their statements are traced"),
    Step(init_database, "its session teardown runs before Flask-SQLAlchemy's own"),
    Step(init_tokens, "before any view can check a token"),
    Step(http.init_app, "before the limiter: its after_request runs after the limiter's"),
    Step(versions.init_app, "after http: an unknown version's 404 is the router's"),
    Step(limiter.init_app, "after http, before idempotency"),
    Step(scope_checks, "after the limiter (a refused key still counts), before negotiation"),
    Step(
        negotiation.init_app, "after the scope check (a CSV it answers counts), before idempotency"
    ),
    Step(idempotency.init_app, "after the limiter: a request it refuses claims no key"),
    Step(init_cors, "last of the hooks: its after_request runs before all of theirs"),
    Step(init_openapi, "before the blueprints it documents"),
)


def register_blueprints() -> None:
    blueprints = (sessions, password_reset, users, stores, batch, items, stock, tags, exports)
    for module in (*blueprints, imports, jobs, events, webhooks, api_keys, audit, health, index):
        api.register_blueprint(module.blp)


def register_middleware(app: Flask) -> None:
    # Flask's documented way to wrap the WSGI app, which its types call a method.
    app.wsgi_app = VersionPrefix(  # type: ignore[method-assign]
        LegacyPaths(app.wsgi_app, sunset=app.config["LEGACY_SUNSET"])
    )
    hops = app.config["TRUSTED_PROXIES"]
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )


def __getattr__(name: str) -> Any:
    """``celery -A app worker`` (and ``beat``) finds the Celery app here: made with a
    Flask app from the environment on first use, never on a plain import."""
    if name == "celery":
        return create_app().extensions["celery"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
