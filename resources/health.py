"""Liveness and readiness probes."""

from __future__ import annotations

from flask import current_app
from flask.typing import ResponseReturnValue
from flask.views import MethodView
from sqlalchemy import text

from blocklist import RedisBlocklist, get_blocklist
from core.web.errors import error_response
from core.web.extensions import limiter
from core.web.smorest import Blueprint
from db import db
from schemas import HealthSchema

blp = Blueprint("health", __name__, description="Probes for load balancers and orchestrators")


@blp.route("/health")
class Health(MethodView):
    decorators = [limiter.exempt]

    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, str]:
        """Liveness: the process answers (the database is not touched)"""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    decorators = [limiter.exempt]

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self) -> ResponseReturnValue:
        """Readiness: the database (and Redis, if configured) answer"""
        checks = {}
        try:
            db.session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            current_app.logger.warning("readiness: database: %s", exc)
            checks["database"] = "unavailable"
        blocklist = get_blocklist()
        if isinstance(blocklist, RedisBlocklist):  # REDIS_URL is set
            try:
                blocklist.ping()
                checks["redis"] = "ok"
            except Exception as exc:  # noqa: BLE001
                current_app.logger.warning("readiness: redis: %s", exc)
                checks["redis"] = "unavailable"
        failed = [name for name, state in checks.items() if state != "ok"]
        if failed:
            return error_response(503, f"Not ready: {', '.join(failed)} unavailable.")
        return {"status": "ok", "checks": checks}
