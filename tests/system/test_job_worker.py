"""Jobs (§12) on a real Celery worker (``celery -A app worker``, a process of its own)
over Redis and PostgreSQL: a store deletion whose worker is killed halfway finishes
on the worker that replaces it, an import job reports its invalid lines and writes
nothing, an export job's file is the streamed export."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from flask import Flask
from sqlalchemy import func, insert, select

from db import db
from helpers import PG_URL, REDIS_URL, CatalogFactory, Client, query, snapshot
from models import Item, Job, StockMovement, Store, Tag, User, item_tags
from models.types import utcnow
from servers import BIN, ROOT, free_port, sample, scrape, server_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# The test's app hands jobs to Redis (no eager tasks); the worker has small batches
# with a pause between them, so that it can be killed halfway.
ON_A_WORKER = {"CELERY_TASK_ALWAYS_EAGER": False, "STORE_DELETE_SYNC_MAX": 100}
WORKER_ENV = {
    "STORE_DELETE_BATCH": "200",
    "STORE_DELETE_PAUSE_MS": "40",
    "JOB_STALE_SECONDS": "2",
    "JOB_SWEEP_SECONDS": "1",
}
TOKEN = "metrics-token-0123456789"
# kombu's keys for the default queue and the messages delivered but not acknowledged.
BROKER_KEYS = ("celery", "unacked", "unacked_index", "unacked_mutex")


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts ``celery -A app worker`` (with ``beat``: the sweep) in its own process
    group; every one started is stopped at the end."""
    broker = redis.Redis.from_url(REDIS_URL)
    broker.delete(*BROKER_KEYS)  # nothing left over from another test
    started: list[subprocess.Popen[bytes]] = []

    def start(*, beat: bool = False, **settings: str) -> subprocess.Popen[bytes]:
        env = server_env(DATABASE_URL=PG_URL, APP_ENV="development", **WORKER_ENV, **settings)
        command = [str(BIN / "celery"), "-A", "app", "worker", "--concurrency=1"]
        command += ["--loglevel=WARNING", "--without-mingle", "--without-gossip"]
        if beat:
            command += ["--beat", "--schedule", str(tmp_path / f"beat-{len(started)}")]
        with Path(tmp_path / f"worker-{len(started)}.log").open("wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    broker.delete(*BROKER_KEYS)
    broker.close()


def job_row(app: Flask, job_id: int) -> Job:
    with app.app_context():
        job = db.session.get_one(Job, job_id)
        db.session.expunge(job)
        return job


def fill_store(app: Flask, owner_id: int, items: int) -> int:
    """A store with ``items`` items, each tagged and with a stock movement (SQL: fast)."""
    with app.app_context():
        store = Store(name="Warehouse", owner_id=owner_id)
        db.session.add(store)
        db.session.flush()
        tag = Tag(name="bulk", store_id=store.id)
        db.session.add(tag)
        db.session.flush()
        now = utcnow()
        ids = db.session.scalars(
            insert(Item).returning(Item.id),
            [
                {
                    "name": f"Thing {n}",
                    "price": Decimal("1.00"),
                    "stock": 1,
                    "store_id": store.id,
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(items)
            ],
        ).all()
        db.session.execute(insert(item_tags), [{"item_id": i, "tag_id": tag.id} for i in ids])
        db.session.execute(
            insert(StockMovement),
            [
                {
                    "item_id": i,
                    "delta": 1,
                    "stock_after": 1,
                    "reason": "received",
                    "created_at": now,
                }
                for i in ids
            ],
        )
        db.session.commit()
        return store.id


@pytest.mark.config(**ON_A_WORKER)
def test_a_deletion_whose_worker_is_killed_halfway_finishes(
    app: Flask,
    client: Client,
    alice: User,
    as_alice: dict[str, str],
    api: CatalogFactory,
    worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    kept = api.store(as_alice, "Kept")
    kept_item = api.item(as_alice, kept, name="Stays")
    store_id = fill_store(app, alice.id, 3000)
    first = worker()
    response = client.delete(f"/stores/{store_id}", headers=as_alice)
    assert response.status_code == 202, response.json
    job_id = response.json["id"]
    assert client.get(f"/stores/{store_id}").status_code == 404  # at once

    wait_for(lambda: job_row(app, job_id).done >= 600, what="the first batches")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    halfway = job_row(app, job_id)
    assert halfway.status == "running" and 600 <= halfway.done < 3000, halfway.done

    worker(beat=True)  # the sweep finds the lease expired and queues the job again
    wait_for(lambda: job_row(app, job_id).status != "running", what="the job to finish")
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": 3000, "total": 3000}
    assert job_row(app, job_id).attempts == 2
    everything = select(Store.id).execution_options(include_deleting=True)
    assert query(app, everything) == [(kept["id"],)]
    assert query(app, select(Item.id).execution_options(include_deleting=True)) == [
        (kept_item["id"],)
    ]
    assert query(app, select(func.count()).select_from(Tag)) == [(0,)]
    assert query(app, select(func.count()).select_from(item_tags)) == [(0,)]
    assert query(app, select(func.count()).select_from(StockMovement)) == [(0,)]


BAD = "name,price,stock\r\nMilk,1.50,3\r\nBread,-2,1\r\nEggs,3.00,many\r\nJam,4.00,1\r\n"


@pytest.mark.config(**ON_A_WORKER)
def test_an_import_job_with_invalid_lines_writes_nothing(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    store = api.store(as_alice)
    api.item(as_alice, store, name="Milk", price="9.00")
    worker()
    catalog = snapshot(app)
    response = client.post(
        f"/stores/{store['id']}/imports",
        data=BAD.encode(),
        headers={**as_alice, "Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.json
    job_id = response.json["id"]
    wait_for(lambda: job_row(app, job_id).finished_at is not None, what="the import")
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "failed" and done["error"]["code"] == 422
    assert done["result"]["invalid"] == 2 and done["result"]["updated"] == 1
    assert [(e["line"], e["column"]) for e in done["result"]["errors"]] == [
        (3, "price"),
        (4, "stock"),
    ]
    after = snapshot(app)
    # Nothing of the catalog: the one new event is the job's own job.failed (the relay
    # may number earlier events meanwhile, so events compare by id and type).
    seen = {row[0] for row in catalog["events"]}
    assert [row[2] for row in after["events"] if row[0] not in seen] == ["job.failed"]
    for table in ("jobs", "job_chunks", "events", "event_counter"):
        del catalog[table], after[table]
    assert after == catalog


@pytest.mark.config(EXPORT_CHUNK_SIZE=7, **ON_A_WORKER)
def test_an_export_jobs_file_is_the_streamed_export(
    app: Flask,
    client: Client,
    alice: User,
    as_alice: dict[str, str],
    worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    store_id = fill_store(app, alice.id, 50)
    port = free_port()
    worker(METRICS_TOKEN=TOKEN, WORKER_METRICS_PORT=str(port))
    response = client.post(
        "/exports", json={"store_id": store_id, "sort": "-name"}, headers=as_alice
    )
    assert response.status_code == 202, response.json
    job_id = response.json["id"]
    wait_for(lambda: job_row(app, job_id).finished_at is not None, what="the export")
    # The job is counted on the worker's own /metrics, by kind and outcome.
    name = "stores_job_duration_seconds_count"
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(
        lambda: sample(scrape(url, TOKEN), name, kind="export", outcome="succeeded") == 1,
        timeout=10,
        what="the job counted",
    )
    measured = scrape(url, TOKEN)
    assert sample(measured, name, kind="export", outcome="failed") == 0
    assert (
        sample(measured, "stores_job_duration_seconds_sum", kind="export", outcome="succeeded") > 0
    )
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "succeeded" and done["result"]["rows"] == 50, done
    file = client.get(done["links"]["file"], headers=as_alice)
    body = file.get_data()
    assert file.status_code == 200 and file.mimetype == "text/csv"
    streamed = client.get(f"/stores/{store_id}/items.csv?sort=-name").get_data()
    assert body == streamed and body.count(b"\r\n") == 51
    # A status only the owner may list (§13): the worker reads as the requester did.
    response = client.post(
        "/exports", json={"store_id": store_id, "status": "all"}, headers=as_alice
    )
    assert response.status_code == 202, response.json
    job_id = response.json["id"]
    wait_for(lambda: job_row(app, job_id).finished_at is not None, what="the second export")
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "succeeded", done
    written = client.get(done["links"]["file"], headers=as_alice).get_data()
    own = client.get(f"/stores/{store_id}/items.csv?status=all", headers=as_alice).get_data()
    assert written == own and own.count(b"\r\n") == 51
