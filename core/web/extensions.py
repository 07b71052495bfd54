"""Extension instances, created once; ``create_app`` wires them to an app."""

from __future__ import annotations

from flask import current_app, request
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_mailman import Mail
from flask_migrate import Migrate

from core.web.smorest import Api, IdConverter, id_param_schema

api = Api()
api.register_converter(IdConverter, id_param_schema)
jwt = JWTManager()
migrate = Migrate()
cors = CORS()
mail = Mail()


def _default_limit() -> str:
    # Read per request: one Limiter instance serves every app made by create_app.
    limit: str = current_app.config["RATE_LIMIT_DEFAULT"]
    return limit


def _limited_as() -> str:
    # Flask-Limiter exempts a request that matched no route (it has no endpoint):
    # 404s and 405s, any number of them. They share one budget per client instead.
    return request.endpoint or "unmatched"


def _caller() -> str:
    """Whose budget a request draws on: its API key, its signed-in user, else its
    client address (core/auth/security.py ``rate_limit_key``; imported here, when
    the first request is counted, because that module needs these instances)."""
    from core.auth.security import rate_limit_key

    return rate_limit_key()


# The client address is request.remote_addr, which ProxyFix sets from
# X-Forwarded-For only when TRUSTED_PROXIES says how many proxies to trust.
limiter = Limiter(
    key_func=_caller,
    default_limits=[_default_limit],
    request_identifier=_limited_as,
)
