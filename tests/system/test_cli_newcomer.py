"""The ``flask`` commands as a newcomer meets them (issue: newcomer friction): run as
real processes, their output read as a person would. A database that is missing or
not migrated is one line saying what to run, a refusal is a sentence, and the
development secret's warning is not repeated by every command."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path

import pytest

from core.web import request_log
from helpers import PG_URL
from servers import BIN, ROOT, migrate, server_env

PASSWORD = "a long passw0rd here"
MIGRATE = "run `flask db upgrade` (or `make migrate`)"


def development_env(database_url: str) -> dict[str, str]:
    """A laptop's environment: development, no JWT secret, nothing warned yet."""
    env = server_env(APP_ENV="development", DATABASE_URL=database_url, LOG_LEVEL="INFO")
    for name in ("JWT_SECRET_KEY", request_log.WARNED, "REDIS_URL"):
        env.pop(name, None)
    return env


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flask"), "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def on_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """``flask *args`` with stdout and stderr on a pseudo-terminal (where the progress
    bar is drawn); its exit status and everything it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "flask"), "--app", "app", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        assert ready, "the command wrote nothing for 120 s"
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        output += data
    os.close(leader)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_an_unmigrated_database_is_one_line_saying_what_to_run(tmp_path: Path) -> None:
    env = development_env(f"sqlite:///{tmp_path / 'new.db'}")
    for command in (
        ["create-admin", "--username", "boss", "--email", "b@example.com", "--password", PASSWORD],
        ["seed"],
        ["blocklist", "purge"],
    ):
        result = flask(env, *command)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"Error: The database sqlite:///{tmp_path / 'new.db'} has no tables, "
            f"or older ones: {MIGRATE} first."
        ]


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_one_line_saying_what_to_do() -> None:
    name = "stores_never_created_h5"
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    for command in (
        ["create-admin", "--username", "boss", "--email", "b@example.com"],
        ["db", "upgrade"],  # Flask-Migrate's, as `make migrate` runs it
    ):
        password = ["--password", PASSWORD] if command[0] == "create-admin" else []
        result = flask(development_env(url), *command, *password)
        assert result.returncode == 1
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: Cannot use the database ")
        assert line.endswith(
            f'database "{name}" does not exist. Create it (`createdb {name}`), then {MIGRATE}.'
        )


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], ["seed"]])
def test_an_unreachable_database_is_one_line_for_the_migrations_too(command: list[str]) -> None:
    """Nothing listens on port 1: the connection itself fails, before any SQL."""
    result = flask(development_env("postgresql://app:pw@127.0.0.1:1/stores"), *command)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "Error: Cannot connect to the database postgresql+psycopg://app:***@127.0.0.1:1/stores: "
    )
    assert line.endswith("Check DATABASE_URL and that the server is running.")


@pytest.mark.parametrize(
    ("command", "setting", "message"),
    [
        ("routes", ("LOG_LEVEL", "bogus"), "LOG_LEVEL must be one of DEBUG, INFO, WARNING, "),
        ("seed", ("RATE_LIMIT_DEFAULT", "garbage"), "RATE_LIMIT_DEFAULT must be rate limits "),
    ],
)
def test_a_refused_setting_is_one_line(
    command: str, setting: tuple[str, str], message: str, tmp_path: Path
) -> None:
    """A command refused while it makes the app says why as the servers do."""
    env = development_env(f"sqlite:///{tmp_path / 'app.db'}") | dict([setting])
    result = flask(env, command)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {message}")


def test_refusals_and_summaries_read_as_sentences(tmp_path: Path) -> None:
    env = development_env(f"sqlite:///{tmp_path / 'app.db'}")
    migrate(env)

    short = flask(env, "create-admin", "--username", "boss", "--email", "bad", "--password", "x")
    assert short.returncode == 1
    assert short.stderr.splitlines() == [
        "Error: No admin created. Email: Must be an email address (name@example.com) of at "
        "most 254 characters. Password: Length must be between 8 and 128."
    ]
    created = flask(
        env,
        "create-admin",
        "--username",
        "boss",
        "--email",
        "b@example.com",
        "--password",
        PASSWORD,
    )
    assert created.returncode == 0, created
    assert created.stdout.startswith("Created admin 'boss' (id ")
    # No command warns about the development secret: none of them serves tokens.
    assert "development-only secret" not in created.stderr + short.stderr

    assert flask(env, "seed", "--stores", "1", "--items", "0").returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("Name,Price,Colour\r\nMilk,1.50,white\r\n")
    status, output = on_a_terminal(env, "import-items", "1", str(bad))
    assert status == 1
    assert output.strip().splitlines() == [
        "Error: Line 1: unknown column(s) 'colour'. Expected the export's header, "
        "id,name,description,price,stock,store_id,tags,created_at,updated_at,sku,status,"
        "low_stock_threshold, or any of its columns in any order (name and price required)."
    ]  # and no empty progress bar above it

    rows = tmp_path / "rows.csv"
    rows.write_text("name,price\r\nMilk,1.50\r\nTea,x\r\nJam,2\r\nBad,\r\n")
    refused = flask(env, "import-items", "1", str(rows))
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == [
        "Nothing written: 2 invalid rows (listed above). Fix them and run again, "
        "or add --skip-invalid to import the 2 valid rows alone."
    ]
    assert "line 3, column price:" in refused.stderr
    dry = flask(env, "import-items", "1", str(rows), "--dry-run", "--skip-invalid")
    assert dry.stdout.splitlines() == [
        "Dry run, nothing written. The file would give: "
        "2 created, 0 updated, 0 unchanged, 2 invalid (skipped)."
    ]
    done = flask(env, "import-items", "1", str(rows), "--skip-invalid")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "Imported: 2 created, 0 updated, 0 unchanged, 2 invalid (skipped)."
    ]
