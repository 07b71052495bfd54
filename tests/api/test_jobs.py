"""Jobs (§12) through the API, with tasks run in the test's process: a big store's
deletion (the store gone at once, its rows in batches), CSV imports and export jobs,
reading, listing and canceling jobs. tests/system/test_job_worker.py runs them on a
real worker."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text, update

from core.catalog import csv_copy
from core.catalog.csv_import import import_items
from core.events import catalog as catalog_events
from core.jobs import engine, work
from core.jobs.engine import JobCanceledError
from db import db
from helpers import (
    CatalogFactory,
    Client,
    Response,
    assert_error,
    bearer,
    client_of,
    meanwhile,
    query,
    snapshot,
    start_until_blocked,
)
from models import Event, Item, Job, JobChunk, StockMovement, Store, Tag, User, item_tags
from models.types import utcnow
from resources import stores as stores_resource
from resources import tags as tags_resource

# A broker nobody reads: the job stays queued until the test runs it (run_job).
QUEUED = {"CELERY_TASK_ALWAYS_EAGER": False, "CELERY_BROKER_URL": "memory://"}
CSV = "text/csv"


def run_job(app: Flask, job_id: int) -> None:
    """The task, run here as a worker would run it."""
    app.extensions["celery"].tasks["jobs.run"].apply(args=[job_id]).get()


def big_store(
    api: CatalogFactory, headers: dict[str, str], name: str = "Big", items: int = 5
) -> Any:
    store = api.store(headers, name)
    tag = api.tag(headers, store, "bulk")
    for n in range(items):
        item = api.item(headers, store, name=f"Thing {n}", stock=n + 1)
        api.link(headers, item, tag)
    return store


def assert_job(response: Response, status: int = 202) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    job: dict[str, Any] = response.json
    assert set(job) == {
        "id",
        "type",
        "status",
        "progress",
        "result",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "links",
    }
    assert job["links"]["self"] == f"/jobs/{job['id']}"
    if status == 202:
        assert response.headers["Location"] == f"/jobs/{job['id']}"
    return job


# --- deleting a big store ----------------------------------------------------------


@pytest.mark.config(STORE_DELETE_SYNC_MAX=3, STORE_DELETE_BATCH=2, **QUEUED)
def test_a_big_store_is_gone_at_once_and_its_rows_go_in_batches(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    keep = api.store(as_alice, "Keep")
    kept = api.item(as_alice, keep, name="Kept")
    store = big_store(api, as_alice)
    item_id = query(app, select(func.min(Item.id)).where(Item.store_id == store["id"]))[0][0]
    tag_id = query(app, select(Tag.id).where(Tag.store_id == store["id"]))[0][0]

    job = assert_job(client.delete(f"/stores/{store['id']}", headers=as_alice))
    assert job["type"] == "store_delete" and job["status"] == "queued"
    assert job["progress"] == {"done": 0, "total": None}  # counted by the job
    assert job["result"] is None and job["error"] is None and job["finished_at"] is None

    # Queued, not run yet: for every reader and writer the store is gone already.
    sid = store["id"]
    for url in (f"/stores/{sid}", f"/stores/{sid}/items", f"/stores/{sid}/tags"):
        assert_error(client.get(url), 404)
    assert_error(client.get(f"/stores/{sid}/items.csv"), 404)
    assert_error(client.get(f"/items/{item_id}"), 404)
    assert_error(client.get(f"/items/{item_id}/stock"), 404)
    assert_error(client.get(f"/tags/{tag_id}"), 404)
    assert [s["id"] for s in client.get("/stores").json] == [keep["id"]]
    assert [i["id"] for i in client.get("/items").json] == [kept["id"]]
    assert [i["id"] for i in client.get("/items?q=thing").json] == []
    assert [i["id"] for i in client.get("/items?search=thing").json] == []
    assert [i["id"] for i in client.get("/items?tag=bulk").json] == []
    exported = client.get("/items.csv").get_data(as_text=True).splitlines()
    assert len(exported) == 2 and "Kept" in exported[1]
    assert_error(client.patch(f"/stores/{sid}", json={"address": "x"}, headers=as_alice), 404)
    assert_error(client.patch(f"/items/{item_id}", json={"price": 2}, headers=as_alice), 404)
    stock = client.post(f"/items/{item_id}/stock", json={"delta": 1, "reason": "received"})
    assert stock.status_code in (401, 404)
    assert_error(
        client.post(
            f"/items/{item_id}/stock", json={"delta": 1, "reason": "received"}, headers=as_alice
        ),
        404,
    )
    body = {"name": "New", "price": 1, "store_id": sid}
    assert_error(client.post("/items", json=body, headers=as_alice), 422)
    assert_error(
        client.post(f"/stores/{sid}/items/batch", json={"create": []}, headers=as_alice), 404
    )
    assert_error(client.delete(f"/stores/{sid}", headers=as_alice), 404)
    # Its name is free again at once.
    assert api.store(as_alice, "Big")["name"] == "Big"
    # Nothing is deleted yet, and a store deletion cannot be canceled.
    left = select(func.count()).select_from(Item).where(Item.store_id == sid)
    assert query(app, left.execution_options(include_deleting=True)) == [(5,)]
    assert_error(
        client.delete(f"/jobs/{job['id']}", headers=as_alice), 409, error="job_not_cancelable"
    )

    run_job(app, job["id"])
    done = assert_job(client.get(f"/jobs/{job['id']}", headers=as_alice), 200)
    assert done["status"] == "succeeded" and done["progress"] == {"done": 5, "total": 5}
    assert done["result"] == {"store_id": sid, "deleted": 5}
    assert done["started_at"] <= done["finished_at"]
    assert query(app, select(Store.id).where(Store.id == sid)) == []
    assert query(app, select(Item.id).where(Item.store_id == sid)) == []
    assert query(app, select(Tag.id).where(Tag.store_id == sid)) == []
    assert query(app, select(StockMovement.id).where(StockMovement.item_id == item_id)) == []
    assert query(app, select(func.count()).select_from(item_tags)) == [(5 * 0,)]
    assert query(app, select(Item.name).where(Item.store_id == keep["id"])) == [("Kept",)]
    # A second delivery of the task (a redelivery) changes nothing.
    run_job(app, job["id"])
    assert client.get(f"/jobs/{job['id']}", headers=as_alice).json == done


@pytest.mark.config(STORE_DELETE_SYNC_MAX=3, STORE_DELETE_BATCH=2, **QUEUED)
def test_a_deletion_whose_run_fails_resumes_and_finishes(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that fails mid-way (a lock held too long, the database away) ends as a
    dead worker's would: the job stays running, the sweep hands it over once its lease
    is stale, and the next run finishes it. (It was finished as failed, the store's
    rows left for good: nobody could delete them again.)"""
    store = big_store(api, as_alice)
    job = assert_job(client.delete(f"/stores/{store['id']}", headers=as_alice))
    original = work.delete_store  # type: ignore[attr-defined]

    def fails_after_a_batch(*args: Any, **kwargs: Any) -> bool:
        on_batch, batches = args[2], []

        def then_fails(deleted: int) -> bool:
            batches.append(deleted)
            if len(batches) > 1:  # the second batch: rolled back, as by the database
                raise RuntimeError("canceling statement due to lock timeout")
            return bool(on_batch(deleted))

        return bool(original(args[0], args[1], then_fails, **kwargs))

    monkeypatch.setattr(work, "delete_store", fails_after_a_batch)
    run_job(app, job["id"])
    left = assert_job(client.get(f"/jobs/{job['id']}", headers=as_alice), 200)
    assert left["status"] == "running" and left["error"] is None
    assert left["progress"] == {"done": 2, "total": 5}  # the batch before the failure
    monkeypatch.undo()
    with app.app_context():
        assert engine.sweep() == []  # its lease is fresh: nobody takes it over yet
        stale = utcnow() - timedelta(seconds=app.config["JOB_STALE_SECONDS"] + 1)
        db.session.execute(update(Job).values(heartbeat_at=stale))
        db.session.commit()
        assert engine.sweep() == [job["id"]]
    run_job(app, job["id"])
    done = assert_job(client.get(f"/jobs/{job['id']}", headers=as_alice), 200)
    assert done["status"] == "succeeded" and done["result"] == {
        "store_id": store["id"],
        "deleted": 5,
    }
    assert query(app, select(Store.id).where(Store.id == store["id"])) == []


@pytest.mark.config(STORE_DELETE_SYNC_MAX=3, STORE_DELETE_BATCH=2)
def test_with_a_worker_at_hand_the_job_finishes(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = big_store(api, as_alice)
    job = assert_job(client.delete(f"/stores/{store['id']}", headers=as_alice))
    assert job["status"] == "queued"  # as committed; the (eager) task ran after
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "succeeded"
    assert query(app, select(func.count()).select_from(Item)) == [(0,)]


@pytest.mark.config(STORE_DELETE_SYNC_MAX=3)
def test_a_small_store_still_goes_at_once(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = big_store(api, as_alice, items=3)
    response = client.delete(f"/stores/{store['id']}", headers=as_alice)
    assert response.status_code == 204 and "Location" not in response.headers
    assert query(app, select(func.count()).select_from(Job)) == [(0,)]


def store_events(app: Flask, store_id: int) -> list[str]:
    return [
        t
        for (t,) in query(
            app, select(Event.type).where(Event.store_id == store_id).order_by(Event.id)
        )
    ]


@pytest.mark.postgres
@pytest.mark.config(STORE_DELETE_SYNC_MAX=1, **QUEUED)
def test_a_change_that_comes_after_the_mark_finds_the_store_gone(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stock movement of the store arrives while its deletion's mark is being
    committed: it waits for the mark, then answers 404 and writes nothing. Before, it
    committed (201) after the mark, its event after the store's last."""
    store = big_store(api, as_alice, items=2)
    item = client.get(f"/stores/{store['id']}/items").json[0]
    answers: list[Any] = []

    def other_request() -> None:
        body = {"delta": 1, "reason": "received"}
        sent = client_of(app).post(f"/items/{item['id']}/stock", json=body, headers=as_alice)
        answers.append((sent.status_code, sent.json))

    # Once marked: the movement waits for the mark's lock.
    other = meanwhile(monkeypatch, stores_resource, "mark_deleting", other_request)
    movements = query(app, select(func.count()).select_from(StockMovement))
    assert_job(client.delete(f"/stores/{store['id']}", headers=as_alice))
    other.join(10)
    [(status, body)] = answers
    assert status == 404 and body["message"] == f"Store {store['id']} not found."
    assert query(app, select(func.count()).select_from(StockMovement)) == movements
    assert store_events(app, store["id"])[-1] == "store.deleted"


@pytest.mark.postgres
@pytest.mark.config(STORE_DELETE_SYNC_MAX=1, **QUEUED)
def test_a_change_under_way_commits_before_the_mark(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A movement that crosses a threshold reads its item again to tell it: a
    deletion marked meanwhile made that read find nothing, a 500. The movement holds
    its store now: the mark waits for its commit, and its events come first."""
    store = big_store(api, as_alice, items=2)
    item = client.get(f"/stores/{store['id']}/items?sort=stock&page_size=1").json[0]
    assert item["stock"] == 1  # -1 crosses to 0: stock.out
    answers: list[int] = []

    def deleting() -> None:
        sent = client_of(app).delete(f"/stores/{store['id']}", headers=as_alice)
        answers.append(sent.status_code)

    # Before the crossings' read of the item: the mark waits for the movement's hold.
    other = meanwhile(monkeypatch, catalog_events, "crossings", deleting, first=True)
    moved = client.post(
        f"/items/{item['id']}/stock", json={"delta": -1, "reason": "sale"}, headers=as_alice
    )
    other.join(10)
    assert moved.status_code == 201, moved.json
    assert answers == [202]
    assert store_events(app, store["id"])[-3:] == ["stock.moved", "stock.out", "store.deleted"]


@pytest.mark.postgres
@pytest.mark.config(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
@pytest.mark.parametrize("bound_webhook", [False, True])
def test_a_tag_change_and_its_stores_deletion_take_turns(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
    bound_webhook: bool,
) -> None:
    """A small store goes in the request: its DELETE cascades to its tags. A tag's
    PATCH locked the tag, then its store with its event: the DELETE, holding the store
    and waiting for the tag, made a deadlock (503). The PATCH holds the store first
    now, the order the deletion locks in: the DELETE waits for it. A store with a
    webhook bound to it is kept, marked, until the webhook is told: that mark waited
    for nothing (the PATCH then answered 500, its event after store.deleted)."""
    store = api.store(as_alice)
    tag = api.tag(as_alice, store, "old")
    if bound_webhook:
        hook = {"url": "http://127.0.0.1:9/hook", "events": ["*"], "store_id": store["id"]}
        assert client.post("/webhooks", json=hook, headers=as_alice).status_code == 201
    answers: list[int] = []

    def deleting() -> None:
        answers.append(
            client_of(app).delete(f"/stores/{store['id']}", headers=as_alice).status_code
        )

    # Once the tag is locked: the DELETE waits for the PATCH's locks.
    other = meanwhile(monkeypatch, tags_resource, "get_or_404", deleting)
    patched = client.patch(f"/tags/{tag['id']}", json={"name": "new"}, headers=as_alice)
    other.join(10)
    assert patched.status_code == 200, patched.json
    assert answers == [204]
    assert store_events(app, store["id"])[-2:] == ["tag.updated", "store.deleted"]


@pytest.mark.postgres
@pytest.mark.config(STORE_DELETE_SYNC_MAX=1, **QUEUED)
def test_an_import_under_way_commits_before_its_stores_deletion(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deletion is asked for while an import writes into the store: it waits for
    the import's commit. Before, the import held nothing: its events came after
    store.deleted, its counts' stock.moved were lost (their items hidden already)."""
    store = big_store(api, as_alice, items=2)
    answers: list[int] = []

    def deleting() -> None:
        answers.append(
            client_of(app).delete(f"/stores/{store['id']}", headers=as_alice).status_code
        )

    # Before the import writes: the mark waits for the import's hold.
    other = meanwhile(monkeypatch, csv_copy, "_write", deleting, first=True)
    body = b"name,price,stock\nThing 0,9,50\nNew,1,1\n"
    with app.app_context():
        summary = import_items(db.session.get_one(Store, store["id"]), io.BytesIO(body))
    other.join(10)
    assert (summary.created, summary.updated) == (1, 1)
    assert answers == [202]
    events = store_events(app, store["id"])
    assert events[-1] == "store.deleted"
    assert sorted(events[-5:-1]) == ["item.created", "item.updated", "stock.moved", "stock.moved"]


@pytest.mark.postgres
@pytest.mark.config(STORE_DELETE_SYNC_MAX=1, **QUEUED)
def test_a_store_is_busy_while_an_import_holds_it(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    """An import holds its store for its whole run: a deletion meanwhile would wait
    for it past the request's time. It waits a few seconds, then 409, nothing done."""
    store = big_store(api, as_alice, items=2)
    with app.app_context():
        importing = db.engine.connect()
        importing.execute(  # as an import's transaction holds the store
            text("SELECT id FROM stores WHERE id = :id FOR KEY SHARE"), {"id": store["id"]}
        )
        try:
            before = snapshot(app)
            body = assert_error(
                client.delete(f"/stores/{store['id']}", headers=as_alice), 409, error="store_busy"
            )
            assert "under way" in body["message"]
            assert snapshot(app) == before
        finally:
            importing.rollback()
            importing.close()
    assert_job(client.delete(f"/stores/{store['id']}", headers=as_alice))


@pytest.mark.config(STORE_DELETE_SYNC_MAX=1, **QUEUED)
def test_only_the_owner_or_an_admin_with_a_fresh_token(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    alice: User,
    bob: User,
    admin: User,
    auth: Callable[[User], dict[str, str]],
    login: Callable[..., dict[str, Any]],
    api: CatalogFactory,
) -> None:
    store = big_store(api, as_alice, items=2)
    stale = client.post("/refresh", headers=bearer(login(alice)["refresh_token"])).json
    before = snapshot(app)
    assert_error(client.delete(f"/stores/{store['id']}", headers=auth(bob)), 403, error="forbidden")
    response = client.delete(f"/stores/{store['id']}", headers=bearer(stale["access_token"]))
    assert_error(response, 401, error="fresh_token_required")
    assert snapshot(app) == before
    job = assert_job(client.delete(f"/stores/{store['id']}", headers=auth(admin)))
    assert client.get(f"/jobs/{job['id']}", headers=auth(admin)).status_code == 200
    # Another user's job does not exist for them.
    assert_error(client.get(f"/jobs/{job['id']}", headers=as_alice), 404)
    assert_error(client.delete(f"/jobs/{job['id']}", headers=as_alice), 404)
    assert_error(client.get(f"/jobs/{job['id']}"), 401)


# --- the lease and the sweep ---------------------------------------------------------


@pytest.mark.config(STORE_DELETE_SYNC_MAX=1, STORE_DELETE_BATCH=1, JOB_STALE_SECONDS=60, **QUEUED)
def test_a_job_whose_worker_died_is_taken_over_by_the_sweep(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = big_store(api, as_alice, items=3)
    job_id = client.delete(f"/stores/{store['id']}", headers=as_alice).json["id"]
    with app.app_context():
        # A worker claimed it, deleted one batch, then died.
        claimed = engine.claim(job_id)
        assert claimed is not None
        assert engine.claim(job_id) is None  # held: a second delivery leaves it alone
        first = select(func.min(Item.id)).where(Item.store_id == store["id"]).scalar_subquery()
        db.session.execute(db.delete(Item).where(Item.id == first))
        engine.renew(engine.Lease.of(claimed), 1)
        db.session.commit()
        assert engine.sweep() == []  # its lease still runs
        long_ago = utcnow() - timedelta(seconds=61)
        db.session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago))
        db.session.commit()
        app.config["CELERY_TASK_ALWAYS_EAGER"] = True
        app.extensions["celery"].conf.task_always_eager = True
        assert engine.sweep() == [job_id]  # queued again, and (eagerly) run
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "succeeded" and done["progress"]["done"] == 3
    assert query(app, select(Job.attempts)) == [(2,)]
    assert query(app, select(func.count()).select_from(Item)) == [(0,)]


@pytest.mark.config(JOB_STALE_SECONDS=60, **QUEUED)
def test_a_job_no_worker_took_is_queued_again(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    job_id = client.post("/exports", json={}, headers=as_alice).json["id"]
    with app.app_context():
        assert engine.sweep() == []
        long_ago = utcnow() - timedelta(seconds=61)
        db.session.execute(update(Job).where(Job.id == job_id).values(created_at=long_ago))
        db.session.commit()
        assert engine.sweep() == [job_id]


@pytest.mark.postgres
@pytest.mark.config(JOB_STALE_SECONDS=2, **QUEUED)
def test_a_live_job_keeps_its_lease_whatever_one_statement_takes(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An import's set-based phase renews no batch: its lease expired while it ran,
    the sweep queued it again every JOB_STALE_SECONDS, and the extra runs waited on
    its lock holding worker slots. The worker's heartbeat keeps a live job's lease."""
    store = api.store(as_alice)
    job_id = assert_job(post_import(client, store, GOOD, as_alice))["id"]
    queued: list[int] = []
    monkeypatch.setattr(engine, "enqueue", queued.append)  # what the sweep would queue
    swept: list[list[int]] = []

    def sweep_later() -> None:
        time.sleep(3.5)  # the statement runs on, past JOB_STALE_SECONDS
        with app.app_context():
            swept.append(engine.sweep())

    # A statement of the set-based phase that takes longer than the lease lasts.
    thread = meanwhile(monkeypatch, csv_copy, "_sql_errors", sweep_later)
    run_job(app, job_id)
    thread.join(10)
    assert swept == [[]] and queued == []
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "succeeded" and done["result"]["created"] == 2
    assert query(app, select(Job.attempts)) == [(1,)]


@pytest.mark.postgres
@pytest.mark.config(JOB_STALE_SECONDS=60, **QUEUED)
def test_a_run_whose_job_is_no_longer_its_own_writes_nothing(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run whose lease expired (its worker paused past JOB_STALE_SECONDS) is taken
    over by another run, which waits for the store's import lock. The first run's
    writes name its claim: it ends without writing, and the second does the import.
    (The first finished the job; the second, let in by its commit, then wrote its
    progress and lease on the finished job.)"""
    store = api.store(as_alice)
    job_id = assert_job(post_import(client, store, GOOD, as_alice))["id"]

    def taken_over() -> None:
        with app.app_context():
            long_ago = utcnow() - timedelta(seconds=61)
            db.session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago))
            db.session.commit()
            work.run(job_id)  # claims it, then waits for the first run's import lock

    thread = meanwhile(monkeypatch, csv_copy, "_sql_errors", taken_over)
    run_job(app, job_id)  # the first run
    thread.join(10)
    assert not thread.is_alive()
    [(status, attempts, done, total, heartbeat, finished)] = query(
        app,
        select(Job.status, Job.attempts, Job.done, Job.total, Job.heartbeat_at, Job.finished_at),
    )
    assert (status, attempts) == ("succeeded", 2)
    assert heartbeat <= finished  # nothing written after the job finished
    assert done == total
    assert query(app, select(func.count()).select_from(Item)) == [(2,)]
    created = select(func.count()).where(Event.type == "item.created")
    assert query(app, created) == [(2,)]  # the first run's rows rolled back


# --- reading and listing -------------------------------------------------------------


@pytest.mark.config(**QUEUED)
def test_the_list_is_the_callers_jobs_newest_first(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    bob: User,
    admin: User,
    auth: Callable[[User], dict[str, str]],
) -> None:
    mine = [client.post("/exports", json={}, headers=as_alice).json["id"] for _ in range(3)]
    theirs = client.post("/exports", json={}, headers=auth(bob)).json["id"]
    page = client.get("/jobs?page_size=2", headers=as_alice)
    assert page.status_code == 200
    assert [j["id"] for j in page.json] == mine[::-1][:2]
    assert page.json[0]["links"] == {"self": f"/jobs/{mine[-1]}"}
    assert page.json[0]["progress"] == {"done": 0, "total": None}
    following = page.headers["Link"].split(";")[0].strip("<>")
    assert [j["id"] for j in client.get(following, headers=as_alice).json] == [mine[0]]
    assert [j["id"] for j in client.get("/jobs", headers=auth(admin)).json] == [
        theirs,
        *mine[::-1],
    ]
    assert_error(client.get("/jobs"), 401)
    assert_error(client.get("/jobs?page_size=101", headers=as_alice), 422)
    assert_error(client.get("/jobs/999", headers=as_alice), 404)


# --- imports -------------------------------------------------------------------------

GOOD = "name,price,stock,tags\r\nMilk,1.50,12,dairy\r\nBread,2.00,,bakery|fresh\r\n"
BAD = (
    "name,price,stock\r\n"
    "Milk,1.50,3\r\n"
    "Bread,-2,1\r\n"  # line 3: price
    "Eggs,3.00,many\r\n"  # line 4: stock
    "Jam,4.00,1\r\n"
)


def post_import(
    client: Client,
    store: Any,
    body: str | bytes,
    headers: dict[str, str],
    params: str = "",
    content_type: str = CSV,
) -> Response:
    data = body.encode() if isinstance(body, str) else body
    return client.post(
        f"/stores/{store['id']}/imports{params}",
        data=data,
        headers={**headers, "Content-Type": content_type},
    )


@pytest.mark.config(**QUEUED)
def test_an_import_whose_store_goes_meanwhile_fails_with_404(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's deletion is marked between the job's start and the import's hold
    of the store: the job fails with the 404 its store's absence is (it failed as
    "unexpectedly", a 500, its store's hold raising outside a request)."""
    store = api.store(as_alice)
    job = assert_job(post_import(client, store, GOOD, as_alice))
    importer = import_items  # as core/jobs/work.py imported it

    def marked_first(*args: Any, **kwargs: Any) -> Any:
        with db.engine.begin() as conn:  # another transaction, committed
            conn.execute(update(Store).where(Store.id == store["id"]).values(deleted_at=utcnow()))
        return importer(*args, **kwargs)

    monkeypatch.setattr(work, "import_items", marked_first)
    run_job(app, job["id"])
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "failed"
    assert done["error"]["code"] == 404
    assert done["error"]["message"] == f"Store {store['id']} not found."
    assert query(app, select(func.count()).select_from(Item)) == [(0,)]


@pytest.mark.postgres
@pytest.mark.config(**QUEUED)
@pytest.mark.parametrize(
    ("made", "what"), [({"name": "milk"}, "name 'milk'"), ({"sku": "M-1"}, "SKU 'M-1'")]
)
def test_a_name_taken_while_an_import_runs_fails_it_with_409(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
    made: dict[str, str],
    what: str,
) -> None:
    """An item made between the import's matching and its writes takes a name (or
    SKU) of the file: the job fails with a 409 that says so, nothing written (it was
    a 500, "failed unexpectedly"). Run again, the file updates that item."""
    store = api.store(as_alice)
    job = assert_job(post_import(client, store, "name,price,sku\r\nMilk,1.50,M-1\r\n", as_alice))
    made_meanwhile: list[int] = []

    def other_request() -> None:
        body = {"name": "Other", "price": 1, "store_id": store["id"]} | made
        made_meanwhile.append(
            client_of(app).post("/items", json=body, headers=as_alice).status_code
        )

    meanwhile(monkeypatch, csv_copy, "_write", other_request, first=True)
    run_job(app, job["id"])
    assert made_meanwhile == [201]
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"]["code"] == 409 and done["error"]["error"] == "already_exists"
    assert (
        f"An item with the {what} was made in the store while the import ran"
        in (done["error"]["message"])
    )
    assert [i["name"] for i in client.get(f"/stores/{store['id']}/items").json] == [
        made.get("name", "Other")
    ]
    monkeypatch.undo()
    again = assert_job(post_import(client, store, "name,price\r\nMilk,1.50\r\n", as_alice))
    run_job(app, again["id"])
    result = client.get(again["links"]["self"], headers=as_alice).json["result"]
    assert (result["created"], result["updated"]) == ((1, 0) if "sku" in made else (0, 1))


@pytest.mark.postgres
def test_imports_of_one_store_take_turns(
    app: Flask, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    """Each import matches its file against the store as it finds it: two at once
    could both create a name, one then failing on the unique index (a 500). An import
    waits for the store's running one (an advisory lock per store)."""
    store = api.store(as_alice)
    done: list[Any] = []

    def importing() -> None:
        with app.app_context():
            row = db.session.get_one(Store, store["id"])
            done.append(import_items(row, io.BytesIO(b"name,price\nTwin,1\n")))

    other = threading.Thread(target=importing)
    with app.app_context():
        running = db.engine.connect()  # as a running import of the store holds it
        running.execute(
            text("SELECT pg_advisory_xact_lock(:kind, :store)"),
            {"kind": csv_copy.IMPORT_LOCK, "store": store["id"]},
        )
        try:
            start_until_blocked(other, query="%pg_advisory_xact_lock%")
            assert other.is_alive() and done == []  # it waits
        finally:
            running.rollback()
            running.close()
    other.join(10)
    assert [summary.created for summary in done] == [1]


def test_an_import_job_runs_the_importer(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    job = assert_job(post_import(client, store, GOOD, as_alice))
    assert job["type"] == "import" and job["progress"] == {"done": 0, "total": None}
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "succeeded", done
    assert done["result"] == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "invalid": 0,
        "errors": [],
    }
    assert done["progress"] == {"done": len(GOOD), "total": len(GOOD)}
    items = client.get(f"/stores/{store['id']}/items?sort=name").json
    assert [(i["name"], i["stock"], [t["name"] for t in i["tags"]]) for i in items] == [
        ("Bread", 0, ["bakery", "fresh"]),
        ("Milk", 12, ["dairy"]),
    ]
    # The body went with the job's end.
    assert query(app, select(func.count()).select_from(JobChunk)) == [(0,)]
    again = client.get(
        assert_job(post_import(client, store, GOOD, as_alice))["links"]["self"], headers=as_alice
    ).json
    assert again["result"]["unchanged"] == 2 and again["result"]["created"] == 0
    # The counts are the caller's (§8), a new item's and a changed item's alike.
    counted = GOOD.replace("Milk,1.50,12", "Milk,1.50,7")
    job = assert_job(post_import(client, store, counted, as_alice))
    assert client.get(job["links"]["self"], headers=as_alice).json["result"]["updated"] == 1
    alice = client.get("/users/me", headers=as_alice).json["id"]
    milk = items[1]["id"]
    moved = client.get(f"/items/{milk}/stock").json
    assert [(m["stock_after"], m["user_id"]) for m in moved] == [(7, alice), (12, alice)]


@pytest.mark.config(**QUEUED)
def test_an_import_jobs_events_name_its_caller_and_request(
    app: Flask, client: Client, as_alice: dict[str, str], alice: User, api: CatalogFactory
) -> None:
    """Run by a worker, not in the request: the changes are still the caller's, in
    their events as in their audit entries (they were the system's, with no request)."""
    store = api.store(as_alice)
    response = post_import(client, store, GOOD, as_alice | {"X-Request-ID": "import-1"})
    job = assert_job(response)
    run_job(app, job["id"])
    assert client.get(job["links"]["self"], headers=as_alice).json["status"] == "succeeded"
    written = select(Event.type, Event.actor_type, Event.actor_id, Event.request_id).where(
        Event.store_id == store["id"], Event.type != "store.created"
    )
    rows = query(app, written)
    assert {kind for kind, *_ in rows} == {"tag.created", "item.created", "stock.moved"}
    assert {tuple(by) for _kind, *by in rows} == {("user", alice.id, "import-1")}


@pytest.mark.config(**QUEUED)
def test_an_imports_progress_is_the_bytes_it_has_read(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """progress.total is the file's size, counted when the job starts (null while it
    is queued); done, the bytes of it the importer has read so far. (done was the size
    from the first second: the body is copied to a local file before it is read.)"""
    store = api.store(as_alice)
    body = "name,price\r\n" + "".join(f"Item {n:04},1.00\r\n" for n in range(3000))
    size = len(body)
    job = assert_job(post_import(client, store, body, as_alice))
    assert job["progress"] == {"done": 0, "total": None}
    monkeypatch.setattr(csv_copy, "PROGRESS_EVERY", 1000)  # as often as SQLite's chunks
    told: list[int] = []
    written: list[tuple[int, int]] = []
    renew = engine.renew_apart

    def watched(lease: engine.Lease, done: int) -> None:
        renew(lease, done)
        told.append(done)
        with db.engine.connect() as connection:  # as GET /jobs/{id} reads it meanwhile
            row = connection.execute(select(Job.done, Job.total)).one()
            written.append((row.done, row.total))

    monkeypatch.setattr(engine, "renew_apart", watched)
    run_job(app, job["id"])
    assert len(told) >= 3 and told == sorted(told)
    assert 0 < told[0] < size and told[-1] <= size
    assert all(total == size for _done, total in written)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # (SQLite cannot write beside the import's transaction: there done waits.)
        assert [done for done, _total in written] == told
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "succeeded"
    assert done["progress"] == {"done": size, "total": size}


@pytest.mark.postgres
def test_an_import_job_leaves_fresh_statistics(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    """As the CLI's import (tests/api/test_import.py): the planner knows the new rows
    at once (the next import's plans, the estimated list counts); a dry run does not
    touch them."""
    store = api.store(as_alice)
    rows = "".join(f"Item {n},1.00,,\r\n" for n in range(73))
    dry = assert_job(
        post_import(client, store, "name,price,stock,tags\r\n" + rows, as_alice, "?dry_run=true")
    )
    assert client.get(dry["links"]["self"], headers=as_alice).json["status"] == "succeeded"
    tuples = text("SELECT reltuples FROM pg_class WHERE relname = 'items'")
    assert query(app, tuples) != [(73,)]
    job = assert_job(post_import(client, store, "name,price,stock,tags\r\n" + rows, as_alice))
    assert client.get(job["links"]["self"], headers=as_alice).json["status"] == "succeeded"
    assert query(app, tuples) == [(73,)]


def test_invalid_lines_fail_the_job_by_line_and_write_nothing(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    before = snapshot(app)
    job = assert_job(post_import(client, store, BAD, as_alice))
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "failed"
    assert done["result"] == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "invalid": 2,
        "errors": [
            {
                "line": 3,
                "column": "price",
                "message": "Must be greater than or equal to 0 and less than 10000000000.",
            },
            {"line": 4, "column": "stock", "message": "Not a valid integer."},
        ],
    }
    assert done["error"]["code"] == 422 and done["error"]["status"] == "Unprocessable Entity"
    assert "2 invalid row(s)" in done["error"]["message"]
    assert done["error"]["errors"] == {
        "csv": {
            "3": {"price": ["Must be greater than or equal to 0 and less than 10000000000."]},
            "4": {"stock": ["Not a valid integer."]},
        }
    }
    after = snapshot(app)
    # Nothing of the catalog: the one new event is the job's own job.failed (compared by
    # id and type: a relay may number earlier events meanwhile).
    seen = {row[0] for row in before["events"]}
    assert [row[2] for row in after["events"] if row[0] not in seen] == ["job.failed"]
    for table in ("jobs", "job_chunks", "events", "event_counter"):
        del before[table], after[table]
    assert after == before


def test_skip_invalid_and_dry_run(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    dry = assert_job(post_import(client, store, GOOD, as_alice, "?dry_run=true"))
    dry = client.get(dry["links"]["self"], headers=as_alice).json
    assert dry["status"] == "succeeded" and dry["result"]["created"] == 2
    assert query(app, select(func.count()).select_from(Item)) == [(0,)]
    skip = assert_job(post_import(client, store, BAD, as_alice, "?skip_invalid=true"))
    skip = client.get(skip["links"]["self"], headers=as_alice).json
    assert skip["status"] == "succeeded" and skip["error"] is None
    assert skip["result"]["created"] == 2 and skip["result"]["invalid"] == 2
    assert query(app, select(Item.name).order_by(Item.name)) == [("Jam",), ("Milk",)]


def test_an_unreadable_file_fails_with_its_reason(
    client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    job = assert_job(post_import(client, store, "name,colour\r\nMilk,white\r\n", as_alice))
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"]["code"] == 422
    assert done["error"]["message"].startswith(
        "Line 1: missing column(s) price; unknown column(s) 'colour'. Expected the export's header"
    )


@pytest.mark.parametrize("charset", ["UTF-8", "utf8", "us-ascii"])
def test_an_import_may_say_it_is_utf8(
    client: Client, as_alice: dict[str, str], api: CatalogFactory, charset: str
) -> None:
    """UTF-8 said in any of its names (or ASCII, its subset) is imported: the job
    succeeds and the row is an item of the store."""
    store = api.store(as_alice)
    answer = post_import(
        client,
        store,
        "name,price\r\nMilk,1.5\r\n",
        as_alice,
        content_type=f"{CSV};charset={charset}",
    )
    assert answer.status_code == 202, answer.json
    job = client.get(answer.headers["Location"], headers=as_alice).json
    assert (job["status"], job["result"]["created"]) == ("succeeded", 1)
    items = client.get(f"/stores/{store['id']}/items", headers=as_alice).json
    assert [(item["name"], item["price"]) for item in items] == [("Milk", 1.5)]


@pytest.mark.config(IMPORT_MAX_BYTES=40)
def test_bad_import_requests_change_nothing(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    bob: User,
    api: CatalogFactory,
) -> None:
    store = api.store(as_alice)
    before = snapshot(app)
    short = "name,price\r\nMilk,1\r\n"
    assert_error(post_import(client, store, short, as_alice, content_type="application/json"), 415)
    assert_error(post_import(client, store, short, as_alice, content_type="text/plain"), 415)
    latin = post_import(client, store, short, as_alice, content_type=f"{CSV}; charset=latin-1")
    assert_error(latin, 415)
    assert "charset=latin-1" in latin.json["message"]
    assert_error(post_import(client, store, "x" * 41, as_alice), 413)
    assert_error(post_import(client, store, "", as_alice), 422)
    assert_error(post_import(client, store, short, as_alice, "?dry_run=maybe"), 422)
    assert_error(post_import(client, store, short, auth(bob)), 403, error="forbidden")
    assert_error(post_import(client, store, short, {}), 401)
    assert_error(post_import(client, {"id": 999}, short, as_alice), 404)
    wrong_method = client.put(
        f"/stores/{store['id']}/imports", data=short, headers={**as_alice, "Content-Type": CSV}
    )
    assert assert_error(wrong_method, 405) and wrong_method.headers["Allow"]
    assert snapshot(app) == before


# --- exports -------------------------------------------------------------------------


def test_an_export_jobs_file_is_the_streamed_export(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    bob: User,
    api: CatalogFactory,
) -> None:
    store = big_store(api, as_alice, items=4)
    api.item(as_alice, store, name="=HYPERLINK()", description="+risky", price="0.10")
    other = api.store(as_alice, "Other")
    api.item(as_alice, other, name="Elsewhere")
    body = {"store_id": store["id"], "sort": "-price", "min_price": "0.05"}
    job = assert_job(client.post("/exports", json=body, headers=as_alice))
    assert job["type"] == "export" and "file" not in job["links"]
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "succeeded", done
    assert done["result"]["rows"] == 5 and done["progress"] == {"done": 5, "total": 5}
    assert done["links"]["file"] == f"/jobs/{job['id']}/file"
    download = client.get(done["links"]["file"], headers=as_alice)
    file = download.get_data()
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert download.headers["Content-Type"] == "text/csv; charset=utf-8"
    streamed = client.get(f"/stores/{store['id']}/items.csv?sort=-price&min_price=0.05")
    assert file == streamed.get_data()
    assert done["result"]["bytes"] == len(streamed.get_data())
    rows = list(csv.reader(io.StringIO(file.decode())))
    assert len(rows) == 6 and "'=HYPERLINK()" in [r[1] for r in rows]
    # Only its creator downloads it.
    assert_error(client.get(done["links"]["file"], headers=auth(bob)), 404)
    assert_error(client.get(done["links"]["file"]), 401)


def test_an_export_file_link_is_shown_to_whoever_may_fetch_it(
    client: Client,
    as_alice: dict[str, str],
    admin: User,
    auth: Callable[[User], dict[str, str]],
    api: CatalogFactory,
) -> None:
    """The file is its creator's only: an admin reads the job, in the list too, without
    a link that would answer 404."""
    api.item(as_alice, api.store(as_alice), name="Milk")
    job = assert_job(client.post("/exports", json={}, headers=as_alice))
    mine = client.get(f"/jobs/{job['id']}", headers=as_alice).json
    assert mine["status"] == "succeeded"
    assert client.get(mine["links"]["file"], headers=as_alice).status_code == 200
    as_admin = auth(admin)
    theirs = assert_job(client.get(f"/jobs/{job['id']}", headers=as_admin), 200)
    assert theirs["links"] == {"self": f"/jobs/{job['id']}"}
    assert theirs == {**mine, "links": theirs["links"]}
    assert [j["links"] for j in client.get("/jobs", headers=as_admin).json] == [theirs["links"]]
    assert [j["links"] for j in client.get("/jobs", headers=as_alice).json] == [mine["links"]]
    assert_error(client.get(mine["links"]["file"], headers=as_admin), 404)


def test_an_export_job_refuses_bad_filters(
    app: Flask, client: Client, as_alice: dict[str, str]
) -> None:
    before = snapshot(app)
    bodies: tuple[Any, ...] = (
        {"colour": "red"},
        {"sort": "weight"},
        {"min_price": -1},
        {"page": 2},
        {"in_stock": 1},
        {"store_id": "1"},
        [],
    )
    for body in bodies:
        assert_error(client.post("/exports", json=body, headers=as_alice), 422)
    assert_error(client.post("/exports", json={}), 401)
    assert snapshot(app) == before


def test_whole_catalog_export_and_the_file_expires(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    api.item(as_alice, store, name="Milk")
    job = client.post("/exports", json={"in_stock": False}, headers=as_alice).json
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["result"]["rows"] == 1
    assert client.get(done["links"]["file"], headers=as_alice).get_data().startswith(b"id,name")
    with app.app_context():
        finished = utcnow() - timedelta(seconds=app.config["JOB_FILE_TTL"] + 1)
        db.session.execute(update(Job).values(finished_at=finished))
        db.session.commit()
    expired = client.get(job["links"]["self"], headers=as_alice).json
    assert "file" not in expired["links"]
    assert_error(client.get(done["links"]["file"], headers=as_alice), 404)
    with app.app_context():
        assert engine.purge() == {"chunks": 1, "jobs": 0}
        long_ago = utcnow() - timedelta(seconds=app.config["JOB_RETENTION_SECONDS"] + 1)
        db.session.execute(update(Job).values(finished_at=long_ago))
        db.session.commit()
        assert engine.purge() == {"chunks": 0, "jobs": 1}
    assert query(app, select(func.count()).select_from(Job)) == [(0,)]


# --- canceling -----------------------------------------------------------------------


@pytest.mark.config(**QUEUED)
def test_a_canceled_job_does_nothing(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    job = assert_job(client.post("/exports", json={}, headers=as_alice))
    imported = assert_job(post_import(client, store, GOOD, as_alice))
    for queued in (job, imported):
        canceled = assert_job(client.delete(f"/jobs/{queued['id']}", headers=as_alice))
        assert canceled["status"] == "canceled" and canceled["finished_at"] is not None
        # The import's body went with its end, as a finished import's does.
        chunks = select(func.count()).where(JobChunk.job_id == queued["id"])
        assert query(app, chunks) == [(0,)]
        run_job(app, queued["id"])
        after = client.get(queued["links"]["self"], headers=as_alice).json
        assert after["status"] == "canceled" and after["result"] is None
        assert_error(
            client.delete(f"/jobs/{queued['id']}", headers=as_alice),
            409,
            error="job_not_cancelable",
        )
    assert query(app, select(func.count()).select_from(Item)) == [(0,)]
    assert query(app, select(func.count()).select_from(JobChunk)) == [(0,)]


@pytest.mark.config(**QUEUED)
def test_a_running_import_stops_at_its_next_chunk_when_canceled(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    rows = "".join(f"Item {n},1.00\r\n" for n in range(2500))
    job_id = post_import(client, store, "name,price\r\n" + rows, as_alice).json["id"]
    with app.app_context():
        claimed = engine.claim(job_id)  # a worker took it...
        assert claimed is not None
        lease = engine.Lease.of(claimed)
    assert assert_job(client.delete(f"/jobs/{job_id}", headers=as_alice))["status"] == "canceled"
    assert query(app, select(func.count()).select_from(JobChunk)) == [(0,)]  # its body went
    with app.app_context():  # ...and runs it: it sees the cancel once it has read the body
        job = db.session.get_one(Job, job_id)
        with pytest.raises(JobCanceledError):
            work.WORK["import"](job, lease)
        db.session.rollback()
    assert query(app, select(func.count()).select_from(Item)) == [(0,)]
    assert client.get(f"/jobs/{job_id}", headers=as_alice).json["status"] == "canceled"


@pytest.mark.postgres
@pytest.mark.config(**QUEUED)
def test_an_import_canceled_after_its_last_check_writes_nothing(
    app: Flask,
    make_app: Callable[..., Flask],
    client: Client,
    as_alice: dict[str, str],
    api: CatalogFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel that lands after the import's last look at its job (the file loaded,
    the set-based statements to come) is a cancel all the same: the rows, their events
    and their movements go, the job stays canceled. (On SQLite the cancel cannot land
    there: it waits for the import's write transaction to end, one writer at a time.)"""
    store = api.store(as_alice)
    api.item(as_alice, store, name="Milk", stock=5)  # the import changes it
    job_id = assert_job(post_import(client, store, GOOD, as_alice))["id"]
    before = snapshot(app)
    # Another web process (its own connections), with the same secret.
    web = client_of(make_app(**QUEUED, JWT_SECRET_KEY=app.config["JWT_SECRET_KEY"]))

    def canceled_meanwhile(*args: Any, progress: Callable[[int], None], **kwargs: Any) -> Any:
        def look_then_cancel(rows: int) -> None:
            progress(rows)  # the job's progress, its last look: still running...
            canceled = web.delete(f"/jobs/{job_id}", headers=as_alice)
            assert assert_job(canceled)["status"] == "canceled"  # ...and canceled now

        return import_items(*args, progress=look_then_cancel, **kwargs)

    monkeypatch.setattr(work, "import_items", canceled_meanwhile)
    run_job(app, job_id)
    done = client.get(f"/jobs/{job_id}", headers=as_alice).json
    assert done["status"] == "canceled" and done["result"] is None and done["error"] is None
    after = snapshot(app)
    assert after["job_chunks"] == []  # the body went with the cancel
    for table in ("jobs", "job_chunks"):
        del before[table], after[table]
    assert after == before  # items, tags, movements, events: as before the import


def test_an_import_sent_with_an_idempotency_key_is_made_once(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory
) -> None:
    store = api.store(as_alice)
    headers = {**as_alice, "Idempotency-Key": "import-1"}
    first = assert_job(post_import(client, store, GOOD, headers))
    again = post_import(client, store, GOOD, headers)
    assert again.status_code == 202 and again.json["id"] == first["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert query(app, select(func.count()).select_from(Job)) == [(1,)]
    done = client.get(first["links"]["self"], headers=as_alice).json
    assert done["status"] == "succeeded" and done["result"]["created"] == 2


@pytest.mark.config(IMPORT_MAX_BYTES=1000)
@pytest.mark.parametrize("key", [None, "chunked-1"])
def test_a_chunked_import_over_the_limit_is_refused_not_cut(
    app: Flask, client: Client, as_alice: dict[str, str], api: CatalogFactory, key: str | None
) -> None:
    """A chunked body has no Content-Length. With an Idempotency-Key, whose fingerprint
    reads the body whole, it was cut at the limit and imported in part (202)."""
    store = api.store(as_alice)
    headers = {**as_alice, "Content-Type": CSV, "Transfer-Encoding": "chunked"}
    if key:
        headers["Idempotency-Key"] = key
    rows = "".join(f"Item {n:03},1\r\n" for n in range(100))  # 1,211 bytes in all

    def send(body: str) -> Response:
        return client.post(
            f"/stores/{store['id']}/imports",
            input_stream=io.BytesIO(body.encode()),
            headers=headers,
            environ_overrides={"wsgi.input_terminated": True},  # as gunicorn's chunked
        )

    before = snapshot(app)
    assert_error(send("name,price\r\n" + rows), 413)
    assert snapshot(app) == before
    job = assert_job(send("name,price\r\n" + rows[:600]))  # 50 rows, under the limit
    done = client.get(job["links"]["self"], headers=as_alice).json
    assert done["status"] == "succeeded" and done["result"]["created"] == 50


def test_a_finished_job_writes_its_event_for_its_creator(
    app: Flask,
    client: Client,
    api: CatalogFactory,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    bob: User,
) -> None:
    """§10/§16: job.succeeded, store null, shown to the job's creator only."""
    store = api.store(as_alice)
    api.item(as_alice, store, name="Milk")
    response = client.post("/exports", json={"store_id": store["id"]}, headers=as_alice)
    assert response.status_code == 202
    job_id = response.json["id"]
    listed = client.get("/events?type=job.succeeded", headers=as_alice)
    assert listed.status_code == 200
    events = [e for e in listed.json if e["data"]["object"]["id"] == job_id]
    assert len(events) == 1
    assert events[0]["store_id"] is None
    assert events[0]["data"]["object"]["status"] == "succeeded"
    others = client.get("/events?type=job.succeeded", headers=auth(bob))
    assert all(e["data"]["object"]["id"] != job_id for e in others.json)


def test_a_job_event_shows_the_job_as_its_get_does(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    """§10: data.object is the resource as its GET returns it; §1: timestamps in ISO
    8601 with +00:00 (they were written as HTTP dates, "Mon, 07 Dec 2026 ... GMT")."""
    store = api.store(as_alice)
    exported = assert_job(client.post("/exports", json={}, headers=as_alice))
    imported = assert_job(post_import(client, store, BAD, as_alice))
    listed = client.get("/events?type=job.succeeded&type=job.failed", headers=as_alice).json
    shown = {e["data"]["object"]["id"]: (e["type"], e["data"]["object"]) for e in listed}
    for job, kind in ((exported, "job.succeeded"), (imported, "job.failed")):
        now = client.get(f"/jobs/{job['id']}", headers=as_alice).json
        assert shown[job["id"]] == (kind, now)
        assert now["finished_at"].endswith("+00:00")
