"""The application factory: config, extensions, error envelope, blueprints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

import blocklist
from core import commands
from core.auth.security import init_passwords
from core.jobs.worker import celery_init_app
from core.web import http, idempotency
from core.web import request_log as request_logging
from core.web.config import Config, config_from_env
from core.web.errors import register_error_handlers
from core.web.extensions import api, cors, jwt, limiter, mail, migrate
from core.web.legacy import LegacyPaths
from core.web.smorest import IdConverter, swagger_assets
from db import close_session, db, engine_options
from resources import (
    audit,
    batch,
    exports,
    health,
    items,
    password_reset,
    sessions,
    stock,
    stores,
    tags,
    users,
)
from schemas import CROSS_FIELD_RULES

MIGRATIONS_DIR = str(Path(__file__).resolve().parent / "migrations")

API_DESCRIPTION = """Stores, the items they sell, and tags to group and search them.

Reads of the catalog are public. Sign in with `POST /login`, then press
**Authorize** and paste the `access_token`. Errors always come as
`{"code", "status", "message"}`, with `errors` on 400/422 and `error` on 401/403.
"""


class JSONKeysInOrder(DefaultJSONProvider):
    """Responses list their fields in the order the schemas declare them."""

    sort_keys = False


def create_app(config: Config | None = None) -> Flask:
    config = config if config is not None else config_from_env()
    config.validate()
    app = Flask(__name__, static_folder=None)
    app.config.from_object(config)
    app.json = JSONKeysInOrder(app)

    request_logging.init_app(app)  # first: every later hook can rely on the request id
    register_extensions(app)
    register_blueprints()
    register_error_handlers(app)
    register_middleware(app)
    commands.init_app(app)
    celery_init_app(app)
    if getattr(config, "dev_secret", False):
        app.logger.warning("JWT_SECRET_KEY is not set: using a development-only secret.")
    if app.config["APP_ENV"] == "production" and not app.config["REDIS_URL"]:
        app.logger.warning(
            "REDIS_URL is not set: rate limits are counted by each worker process on its own."
        )
    return app


def register_extensions(app: Flask) -> None:
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    db.init_app(app)
    # Teardowns run in reverse order: this one before Flask-SQLAlchemy's own.
    app.teardown_appcontext(close_session)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True, render_as_batch=True)
    jwt.init_app(app)
    init_passwords(app)
    mail.init_app(app)
    blocklist.init_app(app)
    http.init_app(app)  # before the limiter: its after_request must run after the limiter's
    limiter.init_app(app)
    idempotency.init_app(app)  # after the limiter: a request it refuses claims no key
    if app.config["CORS_ORIGINS"]:
        cors.init_app(app, origins=app.config["CORS_ORIGINS"], **http.CORS_OPTIONS)
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(swagger_assets)
    api.init_app(
        app,
        spec_kwargs={
            "info": {"description": API_DESCRIPTION},
            "extra_plugins": [idempotency.IdempotencyDoc()],
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )


def register_blueprints() -> None:
    for module in (
        sessions,
        password_reset,
        users,
        stores,
        batch,
        items,
        stock,
        tags,
        exports,
        audit,
        health,
    ):
        api.register_blueprint(module.blp)
    for name, rules in CROSS_FIELD_RULES.items():
        api.spec.components.schemas[name].update(rules)


def register_middleware(app: Flask) -> None:
    # Flask's documented way to wrap the WSGI app, which its types call a method.
    app.wsgi_app = LegacyPaths(app.wsgi_app, sunset=app.config["LEGACY_SUNSET"])  # type: ignore[method-assign]
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
