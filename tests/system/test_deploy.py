"""The deployment as it runs: the image's files linted, the entrypoint and gunicorn as
real processes, production refusing unsafe settings, and a graceful stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from ruamel.yaml import YAML
from sqlalchemy.engine import make_url

import images
import prestart
from core.web.config import DevelopmentConfig, ProductionConfig
from db import MIGRATION_LOCK_ID
from helpers import PG_URL
from servers import (
    BIN,
    ROOT,
    SECRET,
    call,
    child_pids,
    free_port,
    gunicorn_command,
    libpq,
    postgres_database,
    production_env,
    serve,
    server_env,
    sign_up,
    wait_for_sessions,
)

# Nothing listens on port 1: the configuration checks come before any connection.
UNREACHABLE_PG = "postgresql://app:s3cret-pw@127.0.0.1:1/stores"
ENTRYPOINT = ["sh", "docker-entrypoint.sh"]


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


# --- the files of the image and of the compose stack, linted without Docker


@pytest.mark.parametrize(
    "command",
    [
        ["hadolint", "Dockerfile"],
        ["shellcheck", "docker-entrypoint.sh"],
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
    ],
    ids=lambda command: command[0],
)
def test_deployment_files_pass_their_linters(command: Any) -> None:
    result = run([str(BIN / command[0]), *command[1:]], os.environ.copy())
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_load_balancer_config_is_valid_nginx() -> None:
    result = run([str(BIN / "crossplane"), "parse", "--strict", "deploy/nginx.conf"], {})
    parsed = json.loads(result.stdout)
    assert parsed["status"] == "ok", parsed["errors"]
    # nginx's own errors answer in the API's envelope.
    answers = {}

    def walk(directives: Any) -> None:
        for directive in directives:
            if directive["directive"] == "return":
                status, body = directive["args"]
                answers[int(status)] = json.loads(body)
            walk(directive.get("block", []))

    walk(parsed["config"][0]["parsed"])
    assert set(answers) == {413, 502, 504}
    for status, body in answers.items():
        assert body["code"] == status and body["status"] and body["message"]


COMPOSE_SECRETS = {"JWT_SECRET_KEY": SECRET, "POSTGRES_PASSWORD": "pg-s3cret"}


def compose_config(**values: str) -> subprocess.CompletedProcess[str]:
    """``podman-compose config``: docker-compose.yml as a compose tool resolves it
    (variables interpolated, required ones enforced) with ``values`` as the only
    settings; no container is started (no images can be pulled here)."""
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS} | values
    return run([str(BIN / "podman-compose"), "-f", "docker-compose.yml", "config"], env)


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    given = {k: v for k, v in COMPOSE_SECRETS.items() if k != missing}
    result = compose_config(**given)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_what_compose_gives_the_services_is_a_production_setup_the_app_accepts() -> None:
    result = compose_config(**COMPOSE_SECRETS)
    assert result.returncode == 0, result.stderr
    services = YAML(typ="safe").load(result.stdout)["services"]
    for name in ("api", "worker", "beat"):
        if name not in services:
            continue
        environment = {k: str(v) for k, v in services[name]["environment"].items()}
        config = ProductionConfig(environment)
        config.validate()  # what the app itself checks at start (no ConfigError)
        assert config.JWT_SECRET_KEY == SECRET
        assert make_url(config.SQLALCHEMY_DATABASE_URI).password == "pg-s3cret"
    api = ProductionConfig({k: str(v) for k, v in services["api"]["environment"].items()})
    # Replicas behind nginx share their limits and revocations (Redis) and trust the
    # one proxy hop, and `--scale api=3` cannot clash on a host port or a name.
    assert api.RATELIMIT_STORAGE_URI.startswith("redis://") and api.TRUSTED_PROXIES == 1
    assert "ports" not in services["api"] and "container_name" not in services["api"]
    # Data and revocations outlive their containers: named volumes, Redis's AOF.
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert services["redis"]["volumes"] == ["redisdata:/data"]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, as the container would run it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, re.M | re.S)
    assert healthcheck, "the Dockerfile has no HEALTHCHECK in exec form"
    command = json.loads(healthcheck[1])
    assert command[0] == "python"
    return [str(BIN / "python"), *command[1:]]


# --- production refuses an unsafe configuration, whichever way it is started

UNSAFE = {
    "no JWT_SECRET_KEY": ({"DATABASE_URL": UNREACHABLE_PG}, "JWT_SECRET_KEY"),
    "short JWT_SECRET_KEY": (
        {"DATABASE_URL": UNREACHABLE_PG, "JWT_SECRET_KEY": "short"},
        "JWT_SECRET_KEY",
    ),
    "no DATABASE_URL": ({"JWT_SECRET_KEY": SECRET}, "DATABASE_URL"),
    "SQLite DATABASE_URL": (
        {"DATABASE_URL": "sqlite:///prod.db", "JWT_SECRET_KEY": SECRET},
        "DATABASE_URL",
    ),
    "FLASK_DEBUG": (
        {"DATABASE_URL": UNREACHABLE_PG, "JWT_SECRET_KEY": SECRET, "FLASK_DEBUG": "1"},
        "FLASK_DEBUG",
    ),
}


@pytest.mark.parametrize("launcher", ["gunicorn", "entrypoint"])
@pytest.mark.parametrize(("values", "variable"), UNSAFE.values(), ids=UNSAFE.keys())
def test_production_refuses_to_start_and_names_the_variable(
    launcher: Any, values: Any, variable: Any
) -> None:
    command = gunicorn_command(free_port()) if launcher == "gunicorn" else ENTRYPOINT
    result = run(command, production_env(**values))
    assert result.returncode != 0
    assert variable in result.stderr
    # One clear line, not a traceback per worker; nothing was served or migrated.
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr
    assert "database at" not in result.stderr


def test_production_never_serves_the_debugger() -> None:
    env = production_env(DATABASE_URL=UNREACHABLE_PG, JWT_SECRET_KEY=SECRET)
    port = str(free_port())
    result = run([str(BIN / "flask"), "--app", "app", "--debug", "run", "--port", port], env)
    assert result.returncode != 0
    assert "FLASK_DEBUG" in result.stderr
    assert "Debugger is active" not in result.stdout + result.stderr


# --- waiting for the database


def test_the_entrypoint_runs_a_command_it_is_given_instead_of_the_server() -> None:
    """`docker run IMAGE flask db upgrade`: the command, not a server that never ends."""
    command = ["python", "-c", "import sys; print('one-off', sys.argv[1:])", "a b"]
    result = run([*ENTRYPOINT, *command], production_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one-off ['a b']\n"
    assert result.stderr == ""  # no configuration check, migration or server logged a line


def test_the_entrypoint_waits_for_the_database_then_names_it() -> None:
    env = production_env(
        DATABASE_URL=UNREACHABLE_PG,
        JWT_SECRET_KEY=SECRET,
        DB_WAIT_ATTEMPTS="3",
        DB_WAIT_DELAY="1",
    )
    started = time.monotonic()
    result = run(ENTRYPOINT, env)
    assert result.returncode != 0
    assert time.monotonic() - started >= 2  # three attempts, one second apart
    assert result.stderr.count("database at 127.0.0.1:1/stores not reachable (attempt") == 3
    assert "127.0.0.1:1/stores could not be reached after 3 attempts" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "Running upgrade" not in result.stderr and "Starting gunicorn" not in result.stderr


def test_prestart_names_the_database_but_never_its_password() -> None:
    where = prestart.database_location("postgresql+psycopg://app:pw-123@db.example:6543/stores")
    assert where == "db.example:6543/stores"
    assert prestart.database_location("postgresql://app:pw-123@db/stores") == "db:5432/stores"
    assert prestart.database_location("sqlite://") == "sqlite :memory:"


def test_prestart_passes_a_safe_config_with_a_database_that_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'up.db'}")
    assert prestart.main() == 0
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    assert prestart.main() == 2  # refused before any connection


def test_prestart_gives_up_after_the_configured_attempts() -> None:
    config = DevelopmentConfig(
        {"DATABASE_URL": UNREACHABLE_PG, "DB_WAIT_ATTEMPTS": "2", "DB_WAIT_DELAY": "0"}
    )
    assert prestart.wait_for_database(config) is False


# --- gunicorn as configured: JSON logs, one proxy policy, the image's healthcheck


def test_gunicorn_logs_json_and_the_app_finds_the_client_behind_a_proxy(tmp_path: Path) -> None:
    # /health touches no database: an empty in-memory one will do.
    env = server_env(
        APP_ENV="development", DATABASE_URL="sqlite://", TRUSTED_PROXIES="1", LOG_LEVEL="INFO"
    )
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with serve(gunicorn_command(port), env | {"WEB_CONCURRENCY": "2"}, port, log=log):
        # With one trusted proxy, the client's own X-Forwarded-For entry is not
        # believed; the one the proxy appended is.
        reply = call(
            "GET",
            f"http://127.0.0.1:{port}/health",
            headers={"X-Forwarded-For": "203.0.113.66, 198.51.100.7", "X-Request-ID": "xff"},
        )
        assert reply.status_code == 200 and reply.json == {"status": "ok"}
        assert run(healthcheck_command(), {"PORT": str(port)}).returncode == 0
    assert run(healthcheck_command(), {"PORT": str(port)}).returncode != 0

    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    loggers = {entry["logger"] for entry in entries}
    assert "gunicorn.error" in loggers and "gunicorn.access" not in loggers
    [access] = [e for e in entries if e.get("request_id") == "xff"]
    assert access["client_ip"] == "198.51.100.7"


# gunicorn.conf.py, with the moment between a worker's fork and its own signal
# handlers (where gunicorn's hook post_fork runs) held open for a few seconds.
HELD_OPEN_AFTER_FORK = """
import os, time
exec(open("gunicorn.conf.py").read())
project_post_fork = post_fork


def post_fork(server, worker):
    open(os.environ["FORKED_MARK"], "w").write(str(os.getpid()))
    time.sleep(3)
    project_post_fork(server, worker)
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
@pytest.mark.parametrize("threads", ["1", "2"], ids=["sync", "threaded"])
def test_a_worker_signalled_right_after_its_fork_stops_on_its_own(
    tmp_path: Path, threads: str, stop: signal.Signals
) -> None:
    """A stop to the group (`make serve` stopped by Ctrl-C or SIGTERM) while a worker is
    just forked: the worker stops by itself once booted, and the master exits 0. Before,
    the signal reached the master's handler in the worker and was lost: the master
    waited its graceful_timeout, then killed the worker. gunicorn's threaded worker
    (GUNICORN_THREADS > 1) is another class, with other handlers."""
    config, mark, log = tmp_path / "held.conf.py", tmp_path / "forked", tmp_path / "gunicorn.log"
    config.write_text(HELD_OPEN_AFTER_FORK)
    port = free_port()
    env = server_env(
        APP_ENV="development",
        DATABASE_URL="sqlite://",
        LOG_LEVEL="INFO",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS=threads,
        GUNICORN_GRACEFUL_TIMEOUT="120",
        FORKED_MARK=str(mark),
    )
    command = [str(BIN / "gunicorn"), "-c", str(config), "--bind", f"127.0.0.1:{port}"]
    with log.open("wb") as stderr:
        master = subprocess.Popen(
            [*command, "app:create_app()"],
            cwd=ROOT,
            env=env,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() or not mark.read_text():
            assert master.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        os.killpg(master.pid, stop)
        assert master.wait(timeout=60) == 0, log.read_text()
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
    out = log.read_text()
    assert f"Worker exiting (pid: {mark.read_text()})" in out, out
    assert "SIGKILL" not in out, out


# --- the entrypoint on PostgreSQL: migrate, serve, and drain on SIGTERM


@pytest.mark.postgres
def test_the_entrypoint_migrates_serves_and_finishes_requests_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "entrypoint.log"
    with postgres_database(PG_URL, prefix="stores_deploy_") as url:
        env = production_env(
            DATABASE_URL=url,
            JWT_SECRET_KEY=SECRET,
            PORT=str(port),
            GUNICORN_HOST="127.0.0.1",
            WEB_CONCURRENCY="2",
            LOG_LEVEL="INFO",
        )
        with serve(ENTRYPOINT, env, port, log=log) as process:
            assert call("GET", f"{base}/ready").json["checks"] == {"database": "ok"}
            auth = sign_up(base)
            store = call("POST", f"{base}/stores", {"name": "Corner Shop"}, headers=auth).json

            replies = []
            patch = threading.Thread(
                target=lambda: replies.append(
                    call(
                        "PATCH",
                        f"{base}/stores/{store['id']}",
                        {"address": "2 High St"},
                        headers=auth,
                        timeout=30,
                    )
                )
            )
            with psycopg.connect(libpq(url)) as locker:
                locker.execute("SELECT 1 FROM stores WHERE id = %s FOR UPDATE", [store["id"]])
                patch.start()
                wait_for_sessions(url, "wait_event_type = 'Lock'", 1)
                process.send_signal(signal.SIGTERM)
                # Until gunicorn has taken the signal (a condition, not a guess of
                # how long that takes on a loaded machine).
                deadline = time.monotonic() + 4  # within the PATCH's statement timeout
                while "Handling signal: term" not in log.read_text():
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
                # Still draining: the PATCH holds a worker until the lock goes.
                assert process.poll() is None and child_pids(process.pid)
            # Leaving the block ends the locking transaction.
            patch.join(timeout=30)
            assert process.wait(timeout=30) == 0
        [reply] = replies
        assert reply.status_code == 200, reply.body
        assert reply.json["address"] == "2 High St"
    out = log.read_text()
    assert "Running upgrade  -> 0001" in out
    assert out.index("Running upgrade") < out.index("Starting gunicorn")
    assert "Handling signal: term" in out


@pytest.mark.postgres
def test_replicas_starting_together_migrate_once() -> None:
    with postgres_database(PG_URL, prefix="stores_deploy_") as url:
        env = production_env(DATABASE_URL=url, JWT_SECRET_KEY=SECRET, LOG_LEVEL="INFO")
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            # Hold the migration lock so that all three are surely running at once.
            conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_ID])
            upgrades = [
                subprocess.Popen(
                    [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(3)
            ]
            wait_for_sessions(url, "wait_event = 'advisory'", 3)
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_ID])
            logs = [upgrade.communicate(timeout=120)[1] for upgrade in upgrades]
            assert [upgrade.returncode for upgrade in upgrades] == [0, 0, 0], logs
            assert sum("Running upgrade" in log for log in logs) == 1
            revisions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
            assert revisions == [(head,)]


# --- the base image's stand-in (tests/images.py) follows the machine's apt sources


def test_the_base_image_comes_from_the_mirror_apt_uses(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("# none here\n")
    (apt / "sources.list.d" / "other.list").write_text(
        "deb [ arch=amd64 signed-by=/k.gpg ] https://vendor.example/apt stable main\n"
    )
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert images.debian_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert images.debian_mirror(apt) == "http://old.example/debian"
    (apt / "sources.list").write_text("")
    (apt / "sources.list.d" / "debian.sources").unlink()
    with pytest.raises(RuntimeError, match="no apt source for Debian bookworm"):
        images.debian_mirror(apt)
