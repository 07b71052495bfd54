"""Reading the environment: each setting parsed and checked where it is read, and a
value that cannot work refused at start in one line naming its variable
(``ConfigError``), by the app, gunicorn (gunicorn.conf.py) and prestart.py alike.
core/web/config.py reads the app's settings with these.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import click
from dotenv import load_dotenv
from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # gunicorn's too
TOKEN_LIFETIMES = ("JWT_ACCESS_TOKEN_EXPIRES", "JWT_REFRESH_TOKEN_EXPIRES", "PASSWORD_RESET_TTL")
# Every setting given to Flask-Limiter: a mistyped one would not stop the app, it would
# switch its limit off (Flask-Limiter logs the parse error and lets every request by).
RATE_LIMIT_SETTINGS = (
    "AUTH_RATE_LIMIT",
    "RATE_LIMIT_DEFAULT",
    "PASSWORD_RESET_RATE_LIMIT_ADDRESS",
    "PASSWORD_RESET_RATE_LIMIT_IP",
)


class ConfigError(click.ClickException, RuntimeError):
    """The configuration is unsafe or incomplete; the message names the variable.

    A ClickException, so that a ``flask`` command (``flask routes``, ``flask seed``)
    refused while it makes the app ends as the servers do: one line, "Error: ...",
    not a traceback. A RuntimeError, which gunicorn writes that way when on_starting
    raises one; prestart.py catches it by name."""


def load_env_file(path: str | Path = ".env") -> bool:
    """Copy the variables of ``path`` (``.env`` in the working directory) into
    ``os.environ``, leaving alone every variable the environment already has. No file,
    no change: a PaaS or a container has none, its settings are real variables.

    FLASK_SKIP_DOTENV=1 turns it off, as it does for the ``flask`` command's own
    loading (the test suite sets it, so a developer's .env cannot change the tests).
    """
    if os.environ.get("FLASK_SKIP_DOTENV", "").lower() in ("1", "true", "yes"):
        return False
    return load_dotenv(path, override=False, encoding="utf-8")


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for every PostgreSQL URL, including a PaaS's ``postgres://``.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3 already; naming the
    driver keeps that choice explicit and independent of SQLAlchemy's default.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def env_str(environ: Mapping[str, str], name: str, default: str = "") -> str:
    """``name`` from ``environ``, trimmed; blank means ``default``."""
    return environ.get(name, "").strip() or default


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """``name`` as an integer (``default`` when unset), from ``low`` to ``high`` if given."""
    raw = env_str(environ, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}.") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low} or more" if high is None else f"from {low} to {high}"
        raise ConfigError(f"{name} must be {bounds}, got {value}.")
    return value


# gunicorn's own numbers that would fail past the configuration (a port out of range
# fails at bind, with a traceback; no worker serves nothing, every request hangs):
# checked by gunicorn.conf.py, and by prestart.py before the image migrates.
SERVER_BOUNDS = {"PORT": (1, 65535), "WEB_CONCURRENCY": (1, None), "GUNICORN_THREADS": (1, None)}


def server_int(environ: Mapping[str, str], name: str, default: int) -> int:
    low, high = SERVER_BOUNDS[name]
    return env_int(environ, name, default, low=low, high=high)


def head_limits(environ: Mapping[str, str]) -> tuple[int, int, int]:
    """MAX_URI_BYTES, MAX_HEADER_BYTES and MAX_HEADER_FIELDS: read here for the app's
    config and for gunicorn.conf.py alike, so that gunicorn bounds the head as the app does."""
    return (
        env_int(environ, "MAX_URI_BYTES", 8190),
        env_int(environ, "MAX_HEADER_BYTES", 8190),
        env_int(environ, "MAX_HEADER_FIELDS", 100),
    )


def log_level(environ: Mapping[str, str]) -> str:
    """LOG_LEVEL, upper-case: read here for the app and for gunicorn.conf.py alike."""
    level = env_str(environ, "LOG_LEVEL", "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}; got {level!r}.")
    return level


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    return env_str(environ, name).lower() in ("1", "true", "yes", "on")


def check_database_url(name: str, url: str) -> None:
    """Refuse a URL SQLAlchemy cannot read, or whose port is not one, before anything
    connects; the message names the variable, never the URL (it holds the password)."""
    try:
        parts = make_url(url)
        port = parts.port
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{name} is not a database URL such as postgresql://user:password@host:5432/dbname."
        ) from None
    if parts.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigError(f"{name} must be a PostgreSQL (or SQLite) URL.")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{name} has port {port}; a port is a number from 1 to 65535.")


def check_rate_limit(name: str, value: str) -> None:
    """Refuse ``value`` unless it parses as Flask-Limiter parses it (``limits``)."""
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be rate limits such as '5 per minute;20 per hour', got {value!r}."
        ) from None


SCHEDULE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_schedule(text: str) -> list[float]:
    """``"5s,5m,2h"`` -> seconds; a bare number is seconds. At least one delay: an
    empty schedule (``","``) would silently turn retries off."""
    delays = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        unit = SCHEDULE_UNITS.get(part[-1])
        try:
            delay = float(part[:-1]) * unit if unit else float(part)
        except ValueError:
            delay = math.nan
        if not 0 <= delay < math.inf:
            raise ConfigError(
                f"WEBHOOK_RETRY_SCHEDULE: {part!r} is not a delay such as 5s, 5m or 2h."
            )
        delays.append(delay)
    if not delays:
        raise ConfigError(
            f"WEBHOOK_RETRY_SCHEDULE has no delay (got {text!r}); give some, such as 5s,5m,2h."
        )
    return delays


def check_http_date(name: str, value: str) -> None:
    """Refuse anything but an HTTP date as HTTP writes it (RFC 9110's IMF-fixdate),
    ``Sat, 01 May 2027 00:00:00 GMT``: the value is sent as a header as it is."""
    try:
        written = format_datetime(parsedate_to_datetime(value), usegmt=True)
    except (TypeError, ValueError):
        written = None
    if written != value:
        raise ConfigError(
            f"{name} must be an HTTP date such as 'Sat, 01 May 2027 00:00:00 GMT', got {value!r}."
        )
