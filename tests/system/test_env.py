""".env as users expect it: `cp .env.example .env`, then `flask run`, `make run`,
`make serve` or gunicorn started from the project directory read it; a variable set in
the real environment always wins; production reads the file only if there is one.

The servers run from a temporary copy of the project (its files linked, plus a .env
of the test's own), so a developer's real .env is never read or written."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from core.web.config import DevelopmentConfig, ProductionConfig, config_from_env
from core.web.env import load_env_file
from servers import BIN, ROOT, SECRET, call, free_port, production_env, serve, server_env

# The file sets these; the real environment of every server below sets CORS_ORIGINS too.
SUNSET = "Fri, 01 Jan 2100 00:00:00 GMT"
FILE_ORIGIN = "https://from-the-file.example"
REAL_ORIGIN = "https://from-the-environment.example"
PG_NOWHERE = "postgresql://app@127.0.0.1:1/stores"


def project_copy(tmp_path: Path, dotenv: str | None) -> Path:
    """A directory that looks like a checkout: every entry of the repository linked
    (the virtualenv: the one running the tests), and ``dotenv`` as its .env."""
    project = tmp_path / "project"
    project.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".env", ".venv", "instance", ".git"):
            (project / entry.name).symlink_to(entry)
    (project / ".venv").symlink_to(BIN.parent)
    if dotenv is not None:
        (project / ".env").write_text(dotenv)
    return project


def dev_env(**values: str) -> dict[str, str]:
    """A development server's real environment: nothing the .env below sets, except
    CORS_ORIGINS, which must win over the file's; .env reading left on."""
    env = server_env(APP_ENV="development", CORS_ORIGINS=REAL_ORIGIN, **values)
    for name in ("FLASK_SKIP_DOTENV", "DATABASE_URL", "LEGACY_SUNSET", "JWT_SECRET_KEY"):
        env.pop(name, None)
    return env


def dev_dotenv(tmp_path: Path, **extra: str) -> str:
    lines = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'from_dotenv.db'}",
        "LEGACY_SUNSET": SUNSET,
        "CORS_ORIGINS": FILE_ORIGIN,
        "JWT_SECRET_KEY": SECRET,
        **extra,
    }
    return "".join(f"{name}={value}\n" for name, value in lines.items())


def assert_settings_from_the_file(base: str, tmp_path: Path) -> None:
    """What only the .env could have set is in effect, and CORS_ORIGINS is the real
    environment's, not the file's."""
    ready = call("GET", f"{base}/ready")
    assert ready.status_code == 200, ready
    # The database is the file's: SQLite at the path it names.
    assert (tmp_path / "from_dotenv.db").exists()
    legacy = call("GET", f"{base}/item/1")
    assert legacy.headers["Sunset"] == SUNSET
    for origin, allowed in ((REAL_ORIGIN, True), (FILE_ORIGIN, False)):
        reply = call("GET", f"{base}/health", headers={"Origin": origin})
        assert (reply.headers.get("Access-Control-Allow-Origin") == origin) is allowed


# --- the loading rule


@pytest.fixture
def reads_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """.env reading on (the suite turns it off), in an empty working directory; every
    variable the tests below write is restored afterwards."""
    monkeypatch.delenv("FLASK_SKIP_DOTENV")
    monkeypatch.chdir(tmp_path)
    for name in ("APP_ENV", "DATABASE_URL", "JWT_SECRET_KEY", "LOG_FORMAT", "HSTS_SECONDS"):
        # setenv first: delenv alone does not restore a variable that was absent.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path


def test_the_file_fills_in_and_the_environment_wins(
    reads_dotenv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (reads_dotenv / ".env").write_text("LOG_FORMAT=text\nHSTS_SECONDS=60\n")
    monkeypatch.setenv("HSTS_SECONDS", "7")
    assert load_env_file() is True
    assert os.environ["LOG_FORMAT"] == "text"
    assert os.environ["HSTS_SECONDS"] == "7"
    config = config_from_env()
    assert (config.LOG_FORMAT, config.HSTS_SECONDS) == ("text", 7)


def test_production_reads_a_file_when_there_is_one(reads_dotenv: Any) -> None:
    (reads_dotenv / ".env").write_text(
        f"APP_ENV=production\nDATABASE_URL=postgres://u@db/stores\nJWT_SECRET_KEY={SECRET}\n"
    )
    config = config_from_env()
    assert isinstance(config, ProductionConfig)
    config.validate()
    assert config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@db/stores"


def test_no_file_changes_nothing(reads_dotenv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    before = dict(os.environ)
    assert load_env_file() is False
    assert dict(os.environ) == before


def test_flask_skip_dotenv_turns_it_off(reads_dotenv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (reads_dotenv / ".env").write_text("LOG_FORMAT=text\n")
    monkeypatch.setenv("FLASK_SKIP_DOTENV", "1")
    assert load_env_file() is False
    assert "LOG_FORMAT" not in os.environ


def test_a_copy_of_the_example_changes_no_default() -> None:
    """`cp .env.example .env` must give exactly the documented defaults."""
    example = dotenv_values(ROOT / ".env.example")
    defaults = {k: v for k, v in vars(DevelopmentConfig({})).items() if k != "environ"}
    given = {k: v for k, v in example.items() if v is not None}  # none is a bare name
    assert given.keys() == example.keys()
    copied = {k: v for k, v in vars(DevelopmentConfig(given)).items() if k != "environ"}
    assert copied == defaults
    # Every variable the service reads is in the example, LOG_FORMAT among them.
    assert {"LOG_FORMAT", "LOG_LEVEL", "PORT", "DATABASE_URL"} <= set(example)


# --- real processes, each started the way the README says, from the project directory


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
@pytest.mark.parametrize("launcher", ["flask run", "make run", "make serve"])
def test_development_servers_read_the_project_env_file(
    launcher: Any, stop: signal.Signals, tmp_path: Path
) -> None:
    project = project_copy(tmp_path, dev_dotenv(tmp_path))
    port = free_port()
    if launcher == "flask run":
        command = [str(BIN / "flask"), "--app", "app", "run", "--port", str(port)]
    else:  # the Makefile's HOST and PORT are make's own variables
        command = ["make", "--no-print-directory", launcher.split()[1], f"PORT={port}"]
    with serve(command, dev_env(), port, cwd=project, group=True) as server:
        assert_settings_from_the_file(f"http://127.0.0.1:{port}", tmp_path)
        # To the whole group: a terminal's Ctrl-C, or an IDE's stop button.
        os.killpg(server.pid, stop)
        server.wait(timeout=30)
    # Stopped, it leaves nothing behind: `make run`'s Celery worker, its pool and its
    # beat are gone too, and gunicorn's workers (`make serve`) once they have finished.
    deadline = time.monotonic() + 30
    while processes_in(project.resolve()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in(project.resolve()) == []


def start(
    program: str, *args: str, env: dict[str, str], cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``program`` of the virtualenv (prestart, gunicorn) to its end: its result."""
    return subprocess.run(
        [str(BIN / program), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def processes_in(folder: Path) -> list[str]:
    """The command lines of the processes running in ``folder``."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def test_gunicorn_reads_its_settings_from_the_file_too(tmp_path: Path) -> None:
    """`gunicorn "app:create_app()"` with no option at all: gunicorn.conf.py (found in
    the working directory) takes the port and the worker count from .env."""
    port = free_port()
    dotenv = dev_dotenv(tmp_path, PORT=str(port), GUNICORN_HOST="127.0.0.1", WEB_CONCURRENCY="1")
    project = project_copy(tmp_path, dotenv)
    command = [str(BIN / "gunicorn"), "app:create_app()"]
    with serve(command, dev_env(), port, cwd=project):
        assert_settings_from_the_file(f"http://127.0.0.1:{port}", tmp_path)


@pytest.mark.parametrize("with_file", [True, False], ids=["with .env", "without"])
def test_production_start_reads_the_file_only_if_present(with_file: Any, tmp_path: Path) -> None:
    """The entrypoint's first step, given only APP_ENV=production: the database and the
    secret come from .env when there is one; without one it refuses, naming the
    variable. Either way it speaks JSON (production's default, on a pipe)."""
    dotenv = f"JWT_SECRET_KEY={SECRET}\nDATABASE_URL=postgresql://app@127.0.0.1:1/stores\n"
    project = project_copy(tmp_path, (dotenv + "DB_WAIT_ATTEMPTS=1\n") if with_file else None)
    env = production_env()
    env.pop("FLASK_SKIP_DOTENV", None)
    result = start("python", "-m", "prestart", env=env, cwd=project)
    assert result.returncode != 0
    assert all(line.startswith('{"time"') for line in result.stderr.splitlines())
    if with_file:  # past the configuration check: it tried the file's database, once
        assert "JWT_SECRET_KEY" not in result.stderr
        assert "127.0.0.1:1/stores could not be reached after 1 attempts" in result.stderr
    else:
        assert "configuration refused: DATABASE_URL is not set." in result.stderr


@pytest.mark.parametrize("url", ["postgres://u:pw@db:notaport/x", "notaurl"])
def test_production_start_refuses_a_malformed_database_url_in_one_line(url: str) -> None:
    """The entrypoint's first step: the refusal docs/deploying.md promises, not the
    traceback of SQLAlchemy's parser."""
    env = production_env(JWT_SECRET_KEY=SECRET, DATABASE_URL=url, LOG_FORMAT="text")
    result = start("python", "-m", "prestart", env=env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "configuration refused: DATABASE_URL is not a database URL such as " in line


@pytest.mark.parametrize(
    "setting",
    [
        "PORT=abc",
        "PORT=70000",
        "PORT=-1",
        "WEB_CONCURRENCY=0",
        "GUNICORN_THREADS=0",
        "GUNICORN_TIMEOUT=abc",
        "LOG_LEVEL=bogus",
        "MAX_URI_BYTES=x",
    ],
)
def test_gunicorn_refuses_a_bad_setting_in_one_line(setting: str) -> None:
    """gunicorn.conf.py's own settings: one line naming the variable, as gunicorn
    writes a refusal, not the traceback it prints for a failing config file."""
    name, value = setting.split("=")
    result = start("gunicorn", "app:create_app()", env=production_env(**{name: value}))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {name} must be ")


def test_gunicorn_refuses_an_unsafe_configuration_in_one_line() -> None:
    """The app's own refusal (on_starting): gunicorn's "Error: ..." line, no traceback."""
    result = start(
        "gunicorn", "app:create_app()", env=production_env(JWT_SECRET_KEY=SECRET, LOG_FORMAT="text")
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Error: DATABASE_URL is not set."


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("WEB_CONCURRENCY=abc", "WEB_CONCURRENCY must be an integer, got 'abc'."),
        ("WEB_CONCURRENCY=0", "WEB_CONCURRENCY must be 1 or more, got 0."),
        ("PORT=70000", "PORT must be from 1 to 65535, got 70000."),
    ],
)
def test_production_start_refuses_a_server_number_gunicorn_cannot_use(
    setting: str, message: str
) -> None:
    """gunicorn reads WEB_CONCURRENCY when imported, before its config file, and a port
    out of range fails at bind: the entrypoint's first step refuses them in one line,
    before the migrations."""
    name, value = setting.split("=")
    env = production_env(JWT_SECRET_KEY=SECRET, DATABASE_URL=PG_NOWHERE, **{name: value})
    result = start("python", "-m", "prestart", env=env | {"LOG_FORMAT": "text"})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"configuration refused: {message}" in line


def test_no_env_file_is_committed_or_copied_into_the_image() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore and "!.env.example" in dockerignore
