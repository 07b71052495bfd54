"""Before the server starts (docker-entrypoint.sh): the configuration is safe and the
database answers. ``python -m prestart`` exits non-zero with a one-line reason if not.

The database may still be starting (a fresh container, a failover), so it is tried
DB_WAIT_ATTEMPTS times, DB_WAIT_DELAY seconds apart, before giving up.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from core.web.config import Config, config_from_env
from core.web.env import SERVER_BOUNDS, ConfigError, load_env_file, server_int
from core.web.request_log import configure_logging
from db import engine_options

log = logging.getLogger("stores.prestart")


def database_location(url: str) -> str:
    """Where ``url`` points, for messages: host, port and database, never the password."""
    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        return f"sqlite {parts.database or ':memory:'}"
    return f"{parts.host or 'localhost'}:{parts.port or 5432}/{parts.database or ''}"


def wait_for_database(config: Config) -> bool:
    """True once ``SELECT 1`` succeeds; False after DB_WAIT_ATTEMPTS failures.
    A SQLite file (development) is never "starting": there is nothing to wait for."""
    url = config.SQLALCHEMY_DATABASE_URI
    if url.startswith("sqlite"):
        return True
    engine = create_engine(url, **engine_options(vars(config)))
    where = database_location(url)
    try:
        for attempt in range(1, config.DB_WAIT_ATTEMPTS + 1):
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
            except DBAPIError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
                log.warning(
                    "database at %s not reachable (attempt %d of %d): %s",
                    where,
                    attempt,
                    config.DB_WAIT_ATTEMPTS,
                    reason,
                )
                if attempt < config.DB_WAIT_ATTEMPTS:
                    time.sleep(config.DB_WAIT_DELAY)
            else:
                log.info("database at %s is up", where)
                return True
        log.error(
            "database at %s could not be reached after %d attempts; check DATABASE_URL "
            "and that the server is running",
            where,
            config.DB_WAIT_ATTEMPTS,
        )
        return False
    finally:
        engine.dispose()


def main() -> int:
    load_env_file()  # first: LOG_FORMAT and APP_ENV, which choose the log format, may be in it
    configure_logging()
    try:
        config = config_from_env()
        config.validate()
        # gunicorn reads WEB_CONCURRENCY itself when it is imported, before
        # gunicorn.conf.py can refuse a bad value in one line, and a PORT out of range
        # fails at bind: checked here, before the migrations, instead.
        for name in SERVER_BOUNDS:
            server_int(os.environ, name, 1)
    except ConfigError as exc:
        log.error("configuration refused: %s", exc)
        return 2
    return 0 if wait_for_database(config) else 1


if __name__ == "__main__":
    sys.exit(main())
