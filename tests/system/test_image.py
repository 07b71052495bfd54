"""The image, really built (``podman build``) and run (``podman run``) against this
machine's PostgreSQL and Redis: what an orchestrator or a PaaS would see.

Run them alone with ``make test-image``. Without podman, runc and debootstrap (and
root) they are skipped; CI (`.ci/run`) installs them, and in CI a skip fails the run.
tests/images.py says how the image is built here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

import images
from db import MIGRATION_LOCK_ID
from helpers import PG_URL, REDIS_URL
from servers import (
    ROOT,
    SECRET,
    call,
    free_port,
    libpq,
    postgres_database,
    sign_up,
    wait_for_sessions,
)

pytestmark = [pytest.mark.image, pytest.mark.postgres]

HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
MAX_IMAGE_BYTES = 300 * 1000 * 1000


@pytest.fixture(scope="module")
def image() -> Iterator[Any]:
    """The image of the working tree, under a tag of its own; removed afterwards
    (the base image and the build stage's cached layers stay for the next run)."""
    base = images.ensure_base_image()
    tag = f"localhost/stores-api-test:{uuid.uuid4().hex[:10]}"
    seconds = images.build_image(tag)
    try:
        yield tag, base, seconds
    finally:
        images.podman("rmi", "--force", tag, check=False)


def api_env(url: str, **values: str) -> dict[str, str]:
    """A container's settings: production (the image's default), a port of its own."""
    return {
        "DATABASE_URL": url,
        "JWT_SECRET_KEY": SECRET,
        "PORT": str(free_port()),
        "GUNICORN_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "INFO",
        **values,
    }


def wait_until_ready(container: images.Container, timeout: float = 90) -> None:
    """Until /ready answers 200; the container's output if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if call("GET", f"{container.url}/ready", timeout=2).status_code == 200:
                return
        except OSError:
            pass
        if not container.state()["Running"]:
            break
        time.sleep(0.2)
    raise AssertionError(f"{container.name} is not ready:\n{container.logs()[-4000:]}")


def revisions(url: str) -> list[tuple[str]]:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def test_the_image_is_small_and_has_no_compiler(
    image: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tag, base, seconds = image
    size = images.image_size(tag)
    with capsys.disabled():
        print(f"\nimage: {size / 1e6:.0f} MB, built in {seconds:.0f} s; base image {base}")
    assert size < MAX_IMAGE_BYTES
    found = images.podman(
        "run", "--rm", *images.RUN_FLAGS, "--entrypoint", "sh", tag, "-c",
        "command -v gcc cc c++ g++ clang ld as make || true",
    )  # fmt: skip
    assert found.stdout == "", found.stdout


def test_a_container_migrates_serves_and_is_healthy(image: Any) -> None:
    tag = image[0]
    with (
        postgres_database(PG_URL, prefix="stores_img_") as url,
        images.containers(tag, api_env(url)) as (api,),
    ):
        wait_until_ready(api)
        assert call("GET", f"{api.url}/ready").json["checks"] == {"database": "ok"}
        assert revisions(url) == [(HEAD,)]
        assert "Running upgrade" in api.logs()
        assert api.exec("id", "-u").stdout.strip() == "10001"
        health = images.podman("healthcheck", "run", api.name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        # The app user can change nothing of the code or the virtualenv.
        writable = api.exec("find", "/app", "/opt/venv", "-writable")
        assert writable.returncode == 0 and writable.stdout == "", writable.stdout[:500]
        assert api.exec("touch", "/app/app.py").returncode != 0
        assert api.exec("sh", "-c", "echo x > /app/new.py").returncode != 0


def test_replicas_started_together_migrate_once(image: Any) -> None:
    """Two containers on one empty database, at the same moment: the advisory lock
    lets one migrate; the other finds nothing left to do; both serve."""
    tag = image[0]
    with (
        postgres_database(PG_URL, prefix="stores_img_") as url,
        psycopg.connect(libpq(url), autocommit=True) as holder,
    ):
        # Held by the test until both are waiting on it: they surely overlap.
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_ID])
        with images.containers(tag, api_env(url), api_env(url)) as replicas:
            wait_for_sessions(url, "wait_event = 'advisory'", 2)
            holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_ID])
            for replica in replicas:
                wait_until_ready(replica)
            logs = [replica.logs() for replica in replicas]
            assert sum("Running upgrade" in log for log in logs) == 1, logs
            assert revisions(url) == [(HEAD,)]


def test_podman_stop_lets_a_request_in_flight_finish(image: Any) -> None:
    tag = image[0]
    with (
        postgres_database(PG_URL, prefix="stores_img_") as url,
        images.containers(tag, api_env(url)) as (api,),
    ):
        wait_until_ready(api)
        auth = sign_up(api.url)
        store = call("POST", f"{api.url}/stores", {"name": "Corner Shop"}, headers=auth).json
        replies = []

        def patch() -> None:
            body = {"address": "2 High St"}
            replies.append(
                call("PATCH", f"{api.url}/stores/{store['id']}", body, headers=auth, timeout=60)
            )

        request = threading.Thread(target=patch)
        stopping = threading.Thread(target=images.podman, args=("stop", "-t", "30", api.name))
        with psycopg.connect(libpq(url)) as locker:
            locker.execute("SELECT 1 FROM stores WHERE id = %s FOR UPDATE", [store["id"]])
            request.start()
            wait_for_sessions(url, "wait_event_type = 'Lock'", 1)
            stopping.start()
            time.sleep(1)
            # Still draining: the PATCH holds a worker until the lock goes. (podman
            # says "stopping" meanwhile, not "running".)
            assert stopping.is_alive() and api.state()["Status"] != "exited"
            assert "Shutting down: Master" not in api.logs()
        request.join(timeout=60)
        stopping.join(timeout=60)
        [reply] = replies
        assert reply.status_code == 200, reply
        assert reply.json["address"] == "2 High St"
        state = api.state()
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
        logs = api.logs()
        assert logs.index("Handling signal: term") < logs.index("PATCH /stores/")


def test_production_without_a_secret_exits_with_one_line(image: Any) -> None:
    tag = image[0]
    env = api_env("postgresql://app@127.0.0.1:1/stores")
    del env["JWT_SECRET_KEY"]
    with images.containers(tag, env, role="nosecret") as (api,):
        assert api.wait() != 0
        [line] = api.logs().splitlines()
        assert "configuration refused: JWT_SECRET_KEY is not set." in line


@pytest.mark.redis
def test_two_containers_act_as_one_service(image: Any) -> None:
    """Two API containers behind nothing but requests sent to each in turn, sharing
    the machine's PostgreSQL and Redis: what one does, the other sees at once."""
    tag = image[0]
    shared = {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": f"img{uuid.uuid4().hex[:8]}"}
    with (
        postgres_database(PG_URL, prefix="stores_img_") as url,
        images.containers(tag, api_env(url, **shared), api_env(url, **shared)) as pair,
    ):
        for api in pair:
            wait_until_ready(api)
        first, second = pair
        assert call("GET", f"{first.url}/ready").json["checks"]["redis"] == "ok"
        auth = sign_up(first.url)
        # Requests take turns, as a round-robin balancer would send them: a write
        # through one is read back through the other, both ways.
        for writer, reader, name in ((first, second, "Corner Shop"), (second, first, "Farm")):
            created = call("POST", f"{writer.url}/stores", {"name": name}, headers=auth)
            assert created.status_code == 201, created
            read = call("GET", f"{reader.url}/stores/{created.json['id']}")
            assert read.status_code == 200 and read.json == created.json
        # A logout through one is refused by the other.
        assert call("GET", f"{first.url}/users/me", headers=auth).status_code == 200
        assert call("POST", f"{second.url}/logout", headers=auth).status_code == 200
        refused = call("GET", f"{first.url}/users/me", headers=auth)
        assert refused.status_code == 401
        assert refused.json["error"] == "token_revoked"
