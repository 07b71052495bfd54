"""Configuration: one class per environment, chosen by ``APP_ENV``.

Values are read from the environment when a config object is made (not at import),
so a test can build any environment it needs. `.env.example` lists every variable;
a copy of it named `.env` in the directory the service starts from is read too
(`load_env_file`), but a variable set in the real environment always wins.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from core.web.env import (
    LOG_FORMATS,
    RATE_LIMIT_SETTINGS,
    TOKEN_LIFETIMES,
    ConfigError,
    check_database_url,
    check_http_date,
    check_rate_limit,
    env_flag,
    env_int,
    env_str,
    head_limits,
    load_env_file,
    log_level,
    normalize_database_url,
    parse_schedule,
)

DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-do-not-deploy-0123456789"  # noqa: S105


class Config:
    """Defaults shared by every environment, read from ``environ``."""

    APP_ENV = "base"
    # Where SQLALCHEMY_DATABASE_URI comes from, for messages.
    DATABASE_VARIABLE = "DATABASE_URL"
    DEBUG = False
    TESTING = False

    JWT_TOKEN_LOCATION = ["headers"]
    JWT_ALGORITHM = "HS256"
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_STRATEGY = "fixed-window"
    # A limiter whose storage is down lets requests through (and logs it);
    # revocation, which is about security rather than load, fails closed instead.
    RATELIMIT_SWALLOW_ERRORS = True

    API_TITLE = "Stores REST API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "/swagger-ui"
    OPENAPI_SWAGGER_UI_URL = "/swagger-ui/assets/"
    OPENAPI_SWAGGER_UI_CONFIG = {"persistAuthorization": True, "displayRequestDuration": True}

    def __init__(self, environ: Mapping[str, str] | None = None, **overrides: Any) -> None:
        self.environ = os.environ if environ is None else environ
        self._read_database()
        self._read_auth()
        self._read_http()
        self._read_limits()
        self._read_jobs()
        self._read_observability()
        self._read_accounts()
        self.configure()
        for key, value in overrides.items():
            setattr(self, key, value)

    def _read_database(self) -> None:
        """The database and Redis: where they are, pools, timeouts, batch sizes."""
        self.SQLALCHEMY_DATABASE_URI = normalize_database_url(self.env_str("DATABASE_URL"))
        self.DB_POOL_SIZE = self.env_int("DB_POOL_SIZE", 5)
        self.DB_MAX_OVERFLOW = self.env_int("DB_MAX_OVERFLOW", 5)
        self.DB_POOL_TIMEOUT = self.env_int("DB_POOL_TIMEOUT", 5)
        self.DB_CONNECT_TIMEOUT = self.env_int("DB_CONNECT_TIMEOUT", 3)
        self.DB_STATEMENT_TIMEOUT_MS = self.env_int("DB_STATEMENT_TIMEOUT_MS", 5000)
        # Items deleted per statement when a store goes (each batch its own transaction).
        self.STORE_DELETE_BATCH = self.env_int("STORE_DELETE_BATCH", 5000, low=1)
        # How long the entrypoint waits for the database to answer (prestart.py).
        self.DB_WAIT_ATTEMPTS = self.env_int("DB_WAIT_ATTEMPTS", 30)
        self.DB_WAIT_DELAY = self.env_int("DB_WAIT_DELAY", 1)
        self.REDIS_URL = self.env_str("REDIS_URL") or None

    def _read_auth(self) -> None:
        """Tokens and password hashing."""
        self.JWT_SECRET_KEY = self.env_str("JWT_SECRET_KEY")
        self.JWT_ACCESS_TOKEN_EXPIRES = timedelta(
            seconds=self.env_int("JWT_ACCESS_TOKEN_EXPIRES", 15 * 60, low=1)
        )
        self.JWT_REFRESH_TOKEN_EXPIRES = timedelta(
            seconds=self.env_int("JWT_REFRESH_TOKEN_EXPIRES", 30 * 24 * 3600, low=1)
        )
        # Argon2id at OWASP's first recommended setting: 19 MiB, 2 passes, 1 lane.
        self.ARGON2_MEMORY_KIB = self.env_int("ARGON2_MEMORY_KIB", 19 * 1024)
        self.ARGON2_TIME_COST = self.env_int("ARGON2_TIME_COST", 2, low=1)
        self.ARGON2_PARALLELISM = self.env_int("ARGON2_PARALLELISM", 1, low=1)

    def _read_http(self) -> None:
        """Requests and responses: body size, proxies, CORS, HSTS, logs."""
        self.MAX_CONTENT_LENGTH = self.env_int("MAX_CONTENT_LENGTH", 1024 * 1024)
        # The request head (core/web/http.py; gunicorn is given the same bounds,
        # gunicorn.conf.py): the request target (414), one header field, their number
        # and their total (431).
        self.MAX_URI_BYTES, self.MAX_HEADER_BYTES, self.MAX_HEADER_FIELDS = head_limits(
            self.environ
        )
        self.MAX_HEADERS_TOTAL_BYTES = self.env_int("MAX_HEADERS_TOTAL_BYTES", 64 * 1024)
        self.TRUSTED_PROXIES = self.env_int("TRUSTED_PROXIES", 0)
        self.CORS_ORIGINS = [
            o.strip() for o in self.env_str("CORS_ORIGINS").split(",") if o.strip()
        ]
        self.HSTS_SECONDS = self.env_int("HSTS_SECONDS", 0)
        # A list read as a sync reads it (updated_after, sort=updated_at) ends this long
        # before the oldest transaction still open (core/lists/settled.py): the time
        # between stamping a row and writing it, and the hosts' clocks apart.
        self.SYNC_SETTLE_MS = self.env_int("SYNC_SETTLE_MS", 1000)
        self.LOG_LEVEL = log_level(self.environ)
        # json or text; empty = chosen by environment (core.web.request_log.choose_format).
        self.LOG_FORMAT = self.env_str("LOG_FORMAT").lower()
        if self.LOG_FORMAT not in ("", *LOG_FORMATS):
            raise ConfigError(f"LOG_FORMAT must be json or text; got {self.LOG_FORMAT!r}.")

    def _read_limits(self) -> None:
        """Rate limits, Redis keys, idempotency, exports, the legacy paths' sunset."""
        self.AUTH_RATE_LIMIT = self.env_str("AUTH_RATE_LIMIT", "5 per minute;20 per hour")
        self.RATE_LIMIT_DEFAULT = self.env_str("RATE_LIMIT_DEFAULT", "300 per minute")
        self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        # Lets several deployments (or test runs) share one Redis: every key of this
        # one (rate-limit counters, revocations) starts with it.
        self.REDIS_KEY_PREFIX = self.env_str("REDIS_KEY_PREFIX", "stores")
        self.RATELIMIT_KEY_PREFIX = self.REDIS_KEY_PREFIX
        # Idempotency-Key (§8): how long an answer is kept for retries, and after how
        # long a claim whose request never finished (a killed worker) is abandoned:
        # longer than gunicorn lets a request run (GUNICORN_TIMEOUT).
        self.IDEMPOTENCY_TTL = self.env_int("IDEMPOTENCY_TTL", 24 * 3600)
        self.IDEMPOTENCY_LOCK_SECONDS = self.env_int("IDEMPOTENCY_LOCK_SECONDS", 60, low=1)
        # What one caller (user, or IP when anonymous) may store a UTC day (§8), and
        # the largest answer kept (a larger one is not remembered: a retry runs afresh).
        self.IDEMPOTENCY_QUOTA_KEYS = self.env_int("IDEMPOTENCY_QUOTA_KEYS", 1000)
        self.IDEMPOTENCY_QUOTA_BYTES = self.env_int("IDEMPOTENCY_QUOTA_BYTES", 50 * 1024 * 1024)
        self.IDEMPOTENCY_MAX_ANSWER_BYTES = self.env_int(
            "IDEMPOTENCY_MAX_ANSWER_BYTES", 1024 * 1024
        )
        # The fingerprint's HMAC key; empty: derived from JWT_SECRET_KEY.
        self.IDEMPOTENCY_SECRET = self.env_str("IDEMPOTENCY_SECRET")
        # Rows per statement when expired keys are purged (flask idempotency purge),
        # and how often beat purges them (core/jobs/upkeep.py).
        self.IDEMPOTENCY_PURGE_BATCH = self.env_int("IDEMPOTENCY_PURGE_BATCH", 1000, low=1)
        self.IDEMPOTENCY_PURGE_SECONDS = self.env_int("IDEMPOTENCY_PURGE_SECONDS", 3600, low=1)
        # How often beat drops revocations of tokens expired anyway (database blocklist).
        self.BLOCKLIST_PURGE_SECONDS = self.env_int("BLOCKLIST_PURGE_SECONDS", 3600, low=1)
        # Rows per statement of a CSV export: memory per worker, and statements per export.
        self.EXPORT_CHUNK_SIZE = self.env_int("EXPORT_CHUNK_SIZE", 5000, low=1)
        self.LEGACY_SUNSET = self.env_str("LEGACY_SUNSET", "Sat, 01 May 2027 00:00:00 GMT")

    def _read_jobs(self) -> None:
        """Background work: the Celery broker and the jobs of §12."""
        # Celery (core/jobs/worker.py): Redis when there is one, else a broker in local
        # files (one machine: `make run`). A task unacknowledged this long (its worker
        # died with it) goes back to the queue; longer than any task runs.
        self.CELERY_BROKER_URL = (
            self.env_str("CELERY_BROKER_URL") or self.REDIS_URL or "filesystem://"
        )
        self.CELERY_VISIBILITY_TIMEOUT = self.env_int("CELERY_VISIBILITY_TIMEOUT", 300, low=1)
        # The app's own folder of files (the SQLite database, that broker's queue):
        # instance/ beside the code unless set (the image: /var/lib/stores, writable
        # where the code is not). An absolute path.
        self.INSTANCE_PATH = self.env_str("INSTANCE_PATH") or None
        self.CELERY_TASK_ALWAYS_EAGER = False
        # Jobs (§12, core/jobs). A store with more items than this is deleted by a job.
        self.STORE_DELETE_SYNC_MAX = self.env_int("STORE_DELETE_SYNC_MAX", 10_000)
        # A pause after each batch of a deletion job: gives the disk to live traffic.
        self.STORE_DELETE_PAUSE_MS = self.env_int("STORE_DELETE_PAUSE_MS", 0)
        self.IMPORT_MAX_BYTES = self.env_int("IMPORT_MAX_BYTES", 50 * 1024 * 1024)
        # A running job renews its lease at every batch; one not renewed for this long
        # lost its worker, and the sweep (every JOB_SWEEP_SECONDS, from beat) queues it
        # again, as it does a job queued this long ago that no worker took.
        self.JOB_STALE_SECONDS = self.env_int("JOB_STALE_SECONDS", 120, low=1)
        self.JOB_SWEEP_SECONDS = self.env_int("JOB_SWEEP_SECONDS", 60, low=1)
        # An export's file is kept this long; finished jobs are forgotten after
        # JOB_RETENTION_SECONDS (purged hourly by beat).
        self.JOB_FILE_TTL = self.env_int("JOB_FILE_TTL", 24 * 3600)
        self.JOB_RETENTION_SECONDS = self.env_int("JOB_RETENTION_SECONDS", 7 * 24 * 3600)
        self.JOB_PURGE_SECONDS = self.env_int("JOB_PURGE_SECONDS", 3600, low=1)
        # Events and webhooks (§10, §11; docs/events.md).
        self.EVENT_RETENTION_DAYS = self.env_int("EVENT_RETENTION_DAYS", 30)
        self.EVENT_PURGE_BATCH = self.env_int("EVENT_PURGE_BATCH", 5000, low=1)
        # How often beat runs the outbox sweep (positions, deliveries due, lost tasks).
        self.EVENTS_SWEEP_SECONDS = self.env_int("EVENTS_SWEEP_SECONDS", 2, low=1)
        self.WEBHOOK_TIMEOUT_SECONDS = self.env_int("WEBHOOK_TIMEOUT_SECONDS", 10, low=1)
        # Delays before each retry of a failed attempt (s, m, h suffixes), each +-jitter.
        self.WEBHOOK_RETRY_SCHEDULE = parse_schedule(
            self.env_str("WEBHOOK_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h")
        )
        self.WEBHOOK_RETRY_JITTER = 0.2
        self.WEBHOOK_DISABLE_AFTER = self.env_int("WEBHOOK_DISABLE_AFTER", 50)
        # How many webhooks and API keys one user may hold (core/auth/limits.py).
        self.WEBHOOK_MAX_PER_USER = self.env_int("WEBHOOK_MAX_PER_USER", 16)
        self.API_KEY_MAX_PER_USER = self.env_int("API_KEY_MAX_PER_USER", 100)
        self.WEBHOOK_ALLOW_HTTP = env_flag(self.environ, "WEBHOOK_ALLOW_HTTP")
        self.WEBHOOK_ALLOW_PRIVATE_NETWORKS = env_flag(
            self.environ, "WEBHOOK_ALLOW_PRIVATE_NETWORKS"
        )
        # A queued attempt not started after this long (its message lost with a broker
        # restart) is queued again by the sweep.
        self.WEBHOOK_REQUEUE_SECONDS = self.env_int("WEBHOOK_REQUEUE_SECONDS", 60, low=1)
        # Each worker process's delivery threads (core/events/lanes.py): the fast lane,
        # and the slow lane of webhooks whose last batch took the whole timeout. Both 0:
        # deliveries are made in the task, holding the process (an earlier release).
        self.WEBHOOK_DELIVERY_THREADS = env_int(
            self.environ, "WEBHOOK_DELIVERY_THREADS", 8, low=0, high=64
        )
        self.WEBHOOK_SLOW_THREADS = env_int(self.environ, "WEBHOOK_SLOW_THREADS", 2, low=0, high=64)

    def _read_observability(self) -> None:
        """Metrics and traces."""
        # Observability (docs/observability.md): /metrics answers only with this bearer
        # token (unset: /metrics is off); traces are exported when
        # OTEL_EXPORTER_OTLP_ENDPOINT is set. Either can be switched off.
        self.METRICS_TOKEN = self.env_str("METRICS_TOKEN")
        self.METRICS_ENABLED = self.env_bool("METRICS_ENABLED", True)
        # The Celery worker's own /metrics (events, deliveries, jobs; same token), on
        # this port of the worker's host; 0: not served (core/jobs/worker_metrics.py).
        self.WORKER_METRICS_PORT = self.env_int("WORKER_METRICS_PORT", 0)
        self.WORKER_METRICS_HOST = self.env_str("WORKER_METRICS_HOST", "0.0.0.0")  # noqa: S104
        self.TRACING_ENABLED = self.env_bool("TRACING_ENABLED", True)

    def _read_accounts(self) -> None:
        """Password reset, mail and the audit log."""
        # Password reset (API.md §15, core/auth/reset.py): the link mailed is
        # PUBLIC_BASE_URL/password-reset?token=..., a page of the site's front end.
        self.PUBLIC_BASE_URL = self.env_str("PUBLIC_BASE_URL", "http://localhost:5000").rstrip("/")
        self.PASSWORD_RESET_TTL = self.env_int("PASSWORD_RESET_TTL", 30 * 60, low=1)
        self.PASSWORD_RESET_RATE_LIMIT_ADDRESS = self.env_str(
            "PASSWORD_RESET_RATE_LIMIT_ADDRESS", "5 per hour"
        )
        self.PASSWORD_RESET_RATE_LIMIT_IP = self.env_str(
            "PASSWORD_RESET_RATE_LIMIT_IP", "20 per hour"
        )
        # Audit log entries older than this are purged (core/auth/audit.py); 0 keeps all.
        self.AUDIT_RETENTION_DAYS = self.env_int("AUDIT_RETENTION_DAYS", 365)
        # How often beat purges them (core/jobs/upkeep.py).
        self.AUDIT_PURGE_SECONDS = self.env_int("AUDIT_PURGE_SECONDS", 24 * 3600, low=1)
        # Outgoing mail through SMTP, Flask-Mail's setting names (Flask-Mailman reads them).
        self.MAIL_BACKEND = "smtp"  # Flask-Mailman would keep test mail in memory otherwise
        self.MAIL_SERVER = self.env_str("MAIL_SERVER", "localhost")
        self.MAIL_PORT = self.env_int("MAIL_PORT", 25)
        self.MAIL_USE_TLS = self.env_bool("MAIL_USE_TLS", False)
        self.MAIL_USE_SSL = self.env_bool("MAIL_USE_SSL", False)
        self.MAIL_USERNAME = self.env_str("MAIL_USERNAME") or None
        self.MAIL_PASSWORD = self.env_str("MAIL_PASSWORD") or None
        self.MAIL_DEFAULT_SENDER = self.env_str("MAIL_DEFAULT_SENDER", "no-reply@localhost")
        self.MAIL_TIMEOUT = self.env_int("MAIL_TIMEOUT", 10, low=1)

    def env_str(self, name: str, default: str = "") -> str:
        return env_str(self.environ, name, default)

    def env_int(self, name: str, default: int, *, low: int = 0) -> int:
        # Every count, size, time and limit here is 0 or more: a negative one was taken
        # (AUDIT_RETENTION_DAYS=-5 kept every entry for ever, silently). Where 0 cannot
        # work (a batch, a period, a timeout), 1 or more: STORE_DELETE_BATCH=0 deleted
        # nothing, for ever, and a DELETE of an empty store timed the worker out.
        return env_int(self.environ, name, default, low=low)

    def env_bool(self, name: str, default: bool) -> bool:
        raw = self.env_str(name).lower()
        if not raw:
            return default
        if raw not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError(f"{name} must be true or false, got {raw!r}.")
        return raw in ("1", "true", "yes", "on")

    def configure(self) -> None:
        """Environment-specific defaults; runs before explicit overrides."""

    def warnings(self) -> list[str]:
        """What is allowed but unwise, one line each (written once: request_log.warn_once)."""
        found = []
        if getattr(self, "dev_secret", False):
            found.append("JWT_SECRET_KEY is not set: using a development-only secret.")
        if self.APP_ENV == "production" and not self.REDIS_URL:
            found.append(
                "REDIS_URL is not set: rate limits are counted by each worker process on its own."
            )
        return found

    def validate(self) -> None:
        """Refuse to start with a configuration that cannot work."""
        if not self.SQLALCHEMY_DATABASE_URI:
            raise ConfigError("DATABASE_URL is not set.")
        check_database_url(self.DATABASE_VARIABLE, self.SQLALCHEMY_DATABASE_URI)
        if not self.JWT_SECRET_KEY:
            raise ConfigError("JWT_SECRET_KEY is not set.")
        for name in RATE_LIMIT_SETTINGS:
            check_rate_limit(name, getattr(self, name))
        # A lifetime of 0 or less would make every token (or reset link) expired at birth.
        for name in TOKEN_LIFETIMES:
            seconds = getattr(self, name)
            seconds = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
            if seconds <= 0:
                raise ConfigError(f"{name} must be a number of seconds above 0, got {seconds:g}.")
        check_http_date("LEGACY_SUNSET", self.LEGACY_SUNSET)


class DevelopmentConfig(Config):
    """Local development: a SQLite file under instance/ unless DATABASE_URL is set."""

    APP_ENV = "development"

    def configure(self) -> None:
        if not self.SQLALCHEMY_DATABASE_URI:
            # Relative: Flask-SQLAlchemy puts it in the app's instance/ folder.
            self.SQLALCHEMY_DATABASE_URI = "sqlite:///stores.db"
        self.dev_secret = not self.JWT_SECRET_KEY
        if self.dev_secret:
            self.JWT_SECRET_KEY = DEV_JWT_SECRET


class TestingConfig(Config):
    """Tests: the database the fixtures choose, cheap password hashing, roomy limits."""

    __test__ = False  # not a pytest test class, despite its name
    APP_ENV = "testing"
    DATABASE_VARIABLE = "TEST_DATABASE_URL"
    TESTING = True

    def configure(self) -> None:
        self.SQLALCHEMY_DATABASE_URI = normalize_database_url(
            self.env_str("TEST_DATABASE_URL", "sqlite://")
        )
        self.JWT_SECRET_KEY = secrets.token_hex(32)
        self.ARGON2_MEMORY_KIB = 8
        self.ARGON2_TIME_COST = 1
        self.AUTH_RATE_LIMIT = "1000 per minute"
        self.RATE_LIMIT_DEFAULT = "10000 per minute"
        # In-process tests run tasks in the request; tests of the worker start a real one.
        self.CELERY_TASK_ALWAYS_EAGER = True
        # A sync's list at once (one process, one clock): the open transactions decide.
        self.SYNC_SETTLE_MS = 0


class ProductionConfig(Config):
    """Production: every secret from the environment, nothing insecure by default."""

    APP_ENV = "production"

    def validate(self) -> None:
        super().validate()
        # `flask --debug run` would serve Werkzeug's debugger, which runs any code
        # it is sent; the app's own DEBUG is always False, but the CLI reads this.
        if self.env_str("FLASK_DEBUG").lower() not in ("", "0", "false", "no"):
            raise ConfigError("FLASK_DEBUG is set; unset it: production never runs in debug mode.")
        if self.SQLALCHEMY_DATABASE_URI.startswith("sqlite"):
            raise ConfigError(
                "DATABASE_URL points at SQLite; production needs PostgreSQL "
                "(postgresql://user:password@host:5432/dbname)."
            )
        if len(self.JWT_SECRET_KEY.encode()) < 32 or self.JWT_SECRET_KEY == DEV_JWT_SECRET:
            raise ConfigError(
                "JWT_SECRET_KEY must be a random value of at least 32 bytes "
                '(python -c "import secrets; print(secrets.token_hex(32))").'
            )


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_from_env(environ: Mapping[str, str] | None = None) -> Config:
    """The config object for ``APP_ENV`` (development when unset). Without an explicit
    ``environ``, the process environment, completed first by ``.env`` if there is one."""
    if environ is None:
        load_env_file()
        environ = os.environ
    name = environ.get("APP_ENV", "").strip().lower() or "development"
    if name not in CONFIGS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}; got {name!r}.")
    return CONFIGS[name](environ)
