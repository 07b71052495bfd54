"""The factory and its configuration: environments, URLs, refusals."""

import logging
from typing import Any

import pytest

from app import create_app
from core.web.config import (
    DEV_JWT_SECRET,
    DevelopmentConfig,
    ProductionConfig,
    TestingConfig,
    config_from_env,
)
from core.web.env import RATE_LIMIT_SETTINGS, ConfigError, normalize_database_url
from core.web.request_log import WARNED

GOOD_SECRET = "s" * 32
PG = "postgresql://app:pw@db.example:5432/stores"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
        ("postgresql://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_database_urls_use_psycopg_3(url: Any, expected: Any) -> None:
    assert normalize_database_url(url) == expected


def test_app_env_chooses_the_class() -> None:
    assert isinstance(config_from_env({}), DevelopmentConfig)
    assert isinstance(config_from_env({"APP_ENV": "Testing"}), TestingConfig)
    assert isinstance(config_from_env({"APP_ENV": "production"}), ProductionConfig)
    with pytest.raises(ConfigError, match="APP_ENV"):
        config_from_env({"APP_ENV": "staging"})


def test_development_defaults_to_sqlite_and_warns_about_its_secret(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once per process group: as if no app of this process had warned yet.
    monkeypatch.setenv(WARNED, "")
    config = DevelopmentConfig({})
    assert config.SQLALCHEMY_DATABASE_URI == "sqlite:///stores.db"
    assert config.JWT_SECRET_KEY == DEV_JWT_SECRET
    with caplog.at_level(logging.WARNING):
        app = create_app(DevelopmentConfig({"DATABASE_URL": "sqlite://"}))
    assert app.debug is False
    assert any("JWT_SECRET_KEY is not set" in r.getMessage() for r in caplog.records)


def test_environment_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ProductionConfig(
        {
            "DATABASE_URL": "postgres://u@h/d",
            "JWT_SECRET_KEY": GOOD_SECRET,
            "JWT_ACCESS_TOKEN_EXPIRES": "60",
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "REDIS_URL": "redis://r:6379/0",
            "AUTH_RATE_LIMIT": "3 per minute",
            "TRUSTED_PROXIES": "2",
        }
    )
    assert config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@h/d"
    assert config.JWT_ACCESS_TOKEN_EXPIRES.total_seconds() == 60
    assert config.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    assert config.RATELIMIT_STORAGE_URI == "redis://r:6379/0"
    assert config.AUTH_RATE_LIMIT == "3 per minute"
    assert config.TRUSTED_PROXIES == 2


def test_defaults_of_the_contract() -> None:
    config = ProductionConfig({})
    assert config.JWT_ACCESS_TOKEN_EXPIRES.total_seconds() == 15 * 60
    assert config.JWT_REFRESH_TOKEN_EXPIRES.total_seconds() == 30 * 24 * 3600
    assert config.MAX_CONTENT_LENGTH == 1024 * 1024
    assert config.RATELIMIT_STORAGE_URI == "memory://"
    assert (config.ARGON2_MEMORY_KIB, config.ARGON2_TIME_COST) == (19 * 1024, 2)  # OWASP


def test_a_non_integer_value_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="DB_POOL_SIZE"):
        ProductionConfig({"DB_POOL_SIZE": "many"})


@pytest.mark.parametrize("name", ["AUDIT_RETENTION_DAYS", "EVENT_RETENTION_DAYS", "DB_POOL_SIZE"])
def test_a_negative_number_names_its_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be 0 or more, got -5"):
        ProductionConfig({name: "-5"})


@pytest.mark.parametrize(
    "name",
    ["STORE_DELETE_BATCH", "EXPORT_CHUNK_SIZE", "WEBHOOK_TIMEOUT_SECONDS", "JOB_SWEEP_SECONDS"],
)
def test_zero_is_refused_where_it_cannot_work(name: str) -> None:
    """A batch of 0 rows never ends; a period or a timeout of 0 s spins or fails."""
    with pytest.raises(ConfigError, match=f"^{name} must be 1 or more, got 0"):
        ProductionConfig({name: "0"})
    assert getattr(ProductionConfig({name: "1"}), name) == 1


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"JWT_SECRET_KEY": GOOD_SECRET}, "DATABASE_URL"),
        ({"DATABASE_URL": PG}, "JWT_SECRET_KEY"),
        ({"DATABASE_URL": PG, "JWT_SECRET_KEY": "short"}, "JWT_SECRET_KEY"),
        ({"DATABASE_URL": PG, "JWT_SECRET_KEY": DEV_JWT_SECRET}, "JWT_SECRET_KEY"),
        ({"DATABASE_URL": "sqlite:///prod.db", "JWT_SECRET_KEY": GOOD_SECRET}, "DATABASE_URL"),
        ({"DATABASE_URL": PG, "JWT_SECRET_KEY": GOOD_SECRET, "FLASK_DEBUG": "1"}, "FLASK_DEBUG"),
    ],
)
def test_production_refuses_unsafe_configuration(environ: Any, variable: Any) -> None:
    with pytest.raises(ConfigError, match=variable):
        create_app(ProductionConfig(environ))


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:secret-pw@db:notaport/x",
        "notaurl",
        "postgresql://u:secret-pw@db:99999/x",
        "mysql://u:secret-pw@db/x",
    ],
)
def test_a_malformed_database_url_is_refused_without_its_password(url: str) -> None:
    config = ProductionConfig({"DATABASE_URL": url, "JWT_SECRET_KEY": GOOD_SECRET})
    with pytest.raises(ConfigError, match=r"^DATABASE_URL ") as refused:
        create_app(config)
    assert "secret-pw" not in str(refused.value)
    # The tests' database is named by its own variable.
    with pytest.raises(ConfigError, match=r"^TEST_DATABASE_URL "):
        TestingConfig({"TEST_DATABASE_URL": url}).validate()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOG_LEVEL", "bogus"),
        ("LEGACY_SUNSET", "tomorrow"),
        ("LEGACY_SUNSET", "2027-05-01"),
        ("LEGACY_SUNSET", "Sun, 01 May 2027 00:00:00 GMT"),  # a Saturday
        ("JWT_ACCESS_TOKEN_EXPIRES", "-5"),
        ("JWT_ACCESS_TOKEN_EXPIRES", "0"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "0"),
        ("PASSWORD_RESET_TTL", "-1"),
        ("WEBHOOK_RETRY_SCHEDULE", ","),
        ("WEBHOOK_RETRY_SCHEDULE", "5s,-1s"),
        ("WEBHOOK_RETRY_SCHEDULE", "inf"),
        ("WEBHOOK_DELIVERY_THREADS", "-1"),
        ("WEBHOOK_SLOW_THREADS", "65"),
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_its_variable(name: str, value: str) -> None:
    """Accepted, these ended as a traceback later, a malformed Sunset header, tokens
    expired at birth, or webhooks never retried."""
    with pytest.raises(ConfigError, match=f"^{name}") as refused:
        create_app(DevelopmentConfig({"DATABASE_URL": "sqlite://", name: value}))
    assert "\n" not in str(refused.value)


def test_production_starts_with_a_safe_configuration() -> None:
    app = create_app(
        ProductionConfig({"DATABASE_URL": PG, "JWT_SECRET_KEY": GOOD_SECRET, "FLASK_DEBUG": "0"})
    )
    assert app.debug is False and app.testing is False
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options["pool_pre_ping"] is True
    assert options["connect_args"]["options"] == "-c statement_timeout=5000"
    assert options["connect_args"]["connect_timeout"] == 3


@pytest.mark.parametrize("name", RATE_LIMIT_SETTINGS)
@pytest.mark.parametrize("value", ["2 per minit", "2/minute;garbage", "garbage"])
def test_a_mistyped_rate_limit_is_refused_not_switched_off(name: str, value: str) -> None:
    """Flask-Limiter would log the parse error at every request and let them all by."""
    config = DevelopmentConfig({"DATABASE_URL": "sqlite://", name: value})
    with pytest.raises(ConfigError, match=f"^{name} must be rate limits") as refused:
        create_app(config)
    assert "\n" not in str(refused.value)
    DevelopmentConfig({"DATABASE_URL": "sqlite://", name: "2/minute; 3 per hour"}).validate()
