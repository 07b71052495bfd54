"""A worker process's delivery threads (core/events/lanes.py): a receiver that hangs
holds one thread of the slow lane, not the process nor another webhook's turn; a
webhook's batches go one at a time, in order. The lanes run here as in a worker, in
threads of the test, against real receivers on 127.0.0.1 (a trickling one hangs)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from core.events import delivery, lanes, tasks
from db import db
from helpers import Client, quiet_stores
from models import Delivery, User, Webhook
from receiver import Receiver, receiving, trickling

SETTINGS = pytest.mark.config(
    WEBHOOK_ALLOW_HTTP=True,
    WEBHOOK_ALLOW_PRIVATE_NETWORKS=True,
    WEBHOOK_TIMEOUT_SECONDS=1,
    WEBHOOK_RETRY_SCHEDULE=[3600.0],
)


class Requeued(list[tuple[int, list[int]]]):
    """What lanes hand back to the queue: (webhook id, attempt ids), in order."""

    def __call__(self, delivery_ids: list[int], webhook_id: int) -> bool:
        self.append((webhook_id, delivery_ids))
        return True


@pytest.fixture
def requeued() -> Requeued:
    return Requeued()


@pytest.fixture
def make_lanes(app: Flask, requeued: Requeued) -> Iterator[Callable[[int, int], lanes.Lanes]]:
    """Lanes of so many fast and slow threads, as a worker process makes them."""
    made: list[lanes.Lanes] = []

    def make(fast: int, slow: int) -> lanes.Lanes:
        made.append(lanes.Lanes(app, fast, slow, tasks.BATCH, requeued))
        return made[-1]

    yield make
    for pool in made:
        pool.fast.shutdown(wait=True)
        pool.slow.shutdown(wait=True)


def hook(client: Client, headers: dict[str, str], url: str) -> int:
    response = client.post("/webhooks", json={"url": url, "events": ["*"]}, headers=headers)
    assert response.status_code == 201, response.json
    webhook_id: int = response.json["id"]
    return webhook_id


def stores(count: int) -> list[str]:
    return [f"Store {n}" for n in range(count)]


def attempts(app: Flask, webhook_id: int, attempt: int = 1) -> list[Delivery]:
    """``webhook_id``'s attempts (the first ones, or their retries), oldest first."""
    with app.app_context():
        found = db.session.scalars(
            select(Delivery)
            .where(Delivery.webhook_id == webhook_id, Delivery.attempt == attempt)
            .order_by(Delivery.id)
        ).all()
        db.session.expunge_all()
        return list(found)


def failed(app: Flask, webhook_id: int) -> int:
    return sum(d.status == "failed" for d in attempts(app, webhook_id))


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    """Until ``check`` holds. The bound only ends a test that would never pass: five
    hanging batches of a few commits each took more than 20 s on a loaded machine."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


@SETTINGS
def test_a_hanging_receiver_goes_to_the_slow_lane_and_others_pass_it(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fast thread: a webhook whose receiver hangs takes it once, for the timeout;
    its next batch then runs in the slow lane while another webhook's attempts go
    through the fast one."""
    # The answering webhook's three batches must all be made while the second hangs,
    # and each stay under half the timeout: 5 s, whatever the database takes on a
    # loaded machine (with 1 s, three batches of a few commits outlasted the hang).
    app.config["WEBHOOK_TIMEOUT_SECONDS"] = 5
    pool = make_lanes(1, 1)
    with trickling(every=0.2, for_at_most=30) as trickler:
        hanging = hook(client, as_alice, trickler.url)
        answering = hook(client, as_alice, receiver.url)
        quiet_stores(app, client, as_alice, stores(3), monkeypatch)
        first, second, third = (d.id for d in attempts(app, hanging))
        pool.submit(hanging, [first])
        pool.submit(hanging, [second])
        wait_until(lambda: pool.webhooks[hanging].slow)
        for d in attempts(app, answering):
            pool.submit(answering, [d.id])
        receiver.wait_for(lambda got: len(got) == 3, timeout=10)
        # Meanwhile the slow lane still makes the second (in the fast lane: after it).
        in_flight = attempts(app, hanging)[1]
        assert (in_flight.status, in_flight.running_until is not None) == ("pending", True)
        pool.submit(hanging, [third])
        wait_until(lambda: failed(app, hanging) == 3)
        # The slow one is remembered, idle; the one that answers is not kept.
        wait_until(lambda: list(pool.webhooks) == [hanging] and not pool.webhooks[hanging].running)
    assert pool.webhooks[hanging].slow and not pool.webhooks[hanging].waiting
    assert trickler.requests == 3
    assert all(d.status == "succeeded" for d in attempts(app, answering))


@SETTINGS
def test_a_webhook_seen_failing_elsewhere_starts_in_the_slow_lane(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process (just started, or another one) that has not seen a webhook yet reads
    its failure count: one that failed last goes to the slow lane at once, and the fast
    thread stays free for the webhook that answers."""
    pool = make_lanes(1, 1)
    with trickling(every=0.2, for_at_most=30) as trickler:
        hanging = hook(client, as_alice, trickler.url)
        answering = hook(client, as_alice, receiver.url)
        quiet_stores(app, client, as_alice, stores(1), monkeypatch)
        with app.app_context():
            db.session.execute(
                update(Webhook).where(Webhook.id == hanging).values(consecutive_failures=1)
            )
            db.session.commit()
        pool.submit(hanging, [d.id for d in attempts(app, hanging)])
        wait_until(lambda: trickler.requests == 1)
        pool.submit(answering, [d.id for d in attempts(app, answering)])
        receiver.wait_for(lambda got: len(got) == 1, timeout=10)
        assert attempts(app, hanging)[0].status == "pending"  # still hanging meanwhile
        wait_until(lambda: failed(app, hanging) == 1)


@SETTINGS
def test_one_owners_hanging_webhooks_hold_only_their_share_of_the_fast_lane(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    bob: User,
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two fast threads, an owner's share one: Alice's two new webhooks (never seen
    failing) hang, one in the fast lane, the other in the slow one, and Bob's attempt
    goes through the fast thread left while both still hang. They took both fast
    threads: Bob's waited for the timeout."""
    pool, as_bob = make_lanes(2, 1), auth(bob)
    with trickling(every=0.2, for_at_most=30) as trickler:
        hanging = [hook(client, as_alice, trickler.url) for _ in range(2)]
        answering = hook(client, as_bob, receiver.url)
        quiet_stores(app, client, as_alice, stores(1), monkeypatch)
        quiet_stores(app, client, as_bob, ["Bob's"], monkeypatch)
        for webhook_id in hanging:
            pool.submit(webhook_id, [d.id for d in attempts(app, webhook_id)])
        wait_until(lambda: trickler.requests == 2)
        assert [pool.webhooks[w].fast for w in hanging] == [True, False]
        pool.submit(answering, [d.id for d in attempts(app, answering)])
        receiver.wait_for(lambda got: len(got) == 1, timeout=10)
        assert [attempts(app, w)[0].status for w in hanging] == ["pending", "pending"]
        wait_until(lambda: sum(failed(app, w) for w in hanging) == 2)
        wait_until(lambda: not pool.held)  # every thread it held given back


@SETTINGS
def test_past_its_share_a_webhook_seen_answering_takes_an_idle_fast_thread(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    auth: Callable[[User], dict[str, str]],
    bob: User,
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two fast threads, an owner's share one, the slow thread held by Bob's receiver
    that hangs: Alice's webhook that answered here before takes the idle fast thread
    while her other one holds her share. It went to the slow lane, behind Bob's, and
    waited for his timeout (a new webhook past the share still does: the test above)."""
    app.config["WEBHOOK_TIMEOUT_SECONDS"] = 3
    pool, as_bob = make_lanes(2, 1), auth(bob)
    with trickling(every=0.2, for_at_most=30) as trickler, receiving(delay=0.2) as busy_one:
        hanging = hook(client, as_bob, trickler.url)
        with app.app_context():  # seen failing: the slow lane from the start
            db.session.execute(
                update(Webhook).where(Webhook.id == hanging).values(consecutive_failures=1)
            )
            db.session.commit()
        busy, answering = hook(client, as_alice, busy_one.url), hook(client, as_alice, receiver.url)
        quiet_stores(app, client, as_alice, ["Alice's first"], monkeypatch)
        pool.submit(answering, [d.id for d in attempts(app, answering)])
        receiver.wait_for(lambda got: len(got) == 1, timeout=10)
        wait_until(lambda: answering not in pool.webhooks)  # done, and answered in time
        quiet_stores(app, client, as_bob, ["Bob's"], monkeypatch)
        pool.submit(hanging, [d.id for d in attempts(app, hanging)])
        wait_until(lambda: trickler.requests == 1)
        quiet_stores(app, client, as_alice, ["Alice's second"], monkeypatch)
        pool.submit(busy, [d.id for d in attempts(app, busy)])  # her share
        assert pool.webhooks[busy].fast and pool.held[pool.webhooks[busy].owner] == 1
        pool.submit(answering, [d.id for d in attempts(app, answering)][1:])
        assert pool.webhooks[answering].fast  # past her share, on the idle fast thread
        receiver.wait_for(lambda got: len(got) == 2, timeout=10)
        assert attempts(app, hanging)[0].status == "pending"  # Bob's still hangs
        wait_until(lambda: failed(app, hanging) == 1)
        wait_until(lambda: not pool.held)
    assert [d.status for d in attempts(app, busy)] == ["succeeded", "succeeded"]


@SETTINGS
def test_attempts_past_what_may_wait_are_read_back_when_it_is_done(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    requeued: Requeued,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst bigger than what may wait in a process (here 2): the rest stay in the
    database and are read back once the 2 are made, not left for the sweep's requeue
    (an import's 10,001 events took 98 s to reach one receiver)."""
    monkeypatch.setattr(lanes, "WAITING_MAX", 2)
    app.config["WEBHOOK_TIMEOUT_SECONDS"] = 10  # never judged slow on a loaded machine
    pool = make_lanes(1, 1)
    webhook_id = hook(client, as_alice, receiver.url)
    quiet_stores(app, client, as_alice, stores(5), monkeypatch)
    pool.submit(webhook_id, [d.id for d in attempts(app, webhook_id)])
    receiver.wait_for(lambda got: len(got) == 5, timeout=10)
    got = [json.loads(body)["data"]["object"]["name"] for body in receiver.bodies()]
    assert got == stores(5)  # in order, each once
    wait_until(lambda: not pool.webhooks)  # nothing waits, nothing is turned away
    assert requeued == []
    assert all(d.status == "succeeded" for d in attempts(app, webhook_id))


@SETTINGS
def test_a_receiver_busy_with_many_quick_answers_stays_in_the_fast_lane(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch cut at the timeout by the number of its attempts, each answered in
    50 ms, is not a slow receiver's: the lane is judged per attempt."""
    pool = make_lanes(1, 1)
    receiver.delay = 0.05
    answering = hook(client, as_alice, receiver.url)
    quiet_stores(app, client, as_alice, stores(40), monkeypatch)
    pool.submit(answering, [d.id for d in attempts(app, answering)])
    receiver.wait_for(lambda got: len(got) == 40, timeout=30)
    wait_until(lambda: answering not in pool.webhooks)  # never slow: not kept


@pytest.mark.parametrize(("fast", "slow"), [(0, 2), (2, 0)])
def test_a_lane_of_no_threads_leaves_one_pool_of_the_others(
    make_lanes: Callable[[int, int], lanes.Lanes], fast: int, slow: int
) -> None:
    """The threads a process starts are the settings' (0 and 2 made four)."""
    pool = make_lanes(fast, slow)
    assert pool.slow is pool.fast and pool.fast._max_workers == 2
    assert pool.size == 2 and pool.share == 1


@SETTINGS
def test_a_slow_database_does_not_make_a_receiver_slow(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lane is judged by the receiver's time: writing the outcome taking 0.6 s (a
    loaded database, against the 1 s timeout) once put a webhook that answers at once in
    the slow lane, for good."""
    pool = make_lanes(1, 1)
    answering = hook(client, as_alice, receiver.url)
    quiet_stores(app, client, as_alice, stores(1), monkeypatch)
    write = delivery._write

    def slow_write(*args: Any) -> Any:
        time.sleep(0.6)
        return write(*args)

    monkeypatch.setattr(delivery, "_write", slow_write)
    pool.submit(answering, [d.id for d in attempts(app, answering)])
    receiver.wait_for(lambda got: len(got) == 1, timeout=10)
    wait_until(lambda: answering not in pool.webhooks)  # done, and not kept as slow
    assert answering in pool.proven


@SETTINGS
def test_a_stopping_worker_finishes_the_attempt_under_way_and_queues_the_rest(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    make_lanes: Callable[[int, int], lanes.Lanes],
    requeued: Requeued,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deploy stops the worker: the attempt under way ends and is written (not sent
    again when its claim expires), its batch starts no other, and what is left or
    waits is queued again at once for another process, as is what comes after."""
    pool = make_lanes(1, 1)
    receiver.delay = 0.4
    answering = hook(client, as_alice, receiver.url)
    quiet_stores(app, client, as_alice, stores(5), monkeypatch)
    ids = [d.id for d in attempts(app, answering)]
    pool.submit(answering, ids[:3])
    pool.submit(answering, ids[3:4])
    receiver.wait_for(lambda _got: receiver.hits == 1, timeout=10)
    pool.close()  # returns once the attempt under way has ended
    assert [d.status for d in attempts(app, answering)] == ["succeeded"] + ["pending"] * 4
    assert all(d.running_until is None for d in attempts(app, answering))
    pool.submit(answering, ids[4:])
    assert receiver.hits == 1
    assert requeued == [(answering, ids[3:4]), (answering, ids[1:3]), (answering, ids[4:])]


@SETTINGS
def test_attempts_a_hanging_receiver_left_no_time_for_are_made_next_in_order(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    make_lanes: Callable[[int, int], lanes.Lanes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A webhook's batches go one at a time, even with threads free: a batch stops
    starting attempts at the timeout, and the rest go first in the webhook's next
    batch, in id order; what would wait past WAITING_MAX is read back from the
    database after them (it was left to the sweep)."""
    pool = make_lanes(2, 1)
    monkeypatch.setattr(lanes, "WAITING_MAX", 2)
    with trickling(every=0.2, for_at_most=30) as trickler:
        hanging = hook(client, as_alice, trickler.url)
        quiet_stores(app, client, as_alice, stores(5), monkeypatch)
        first = attempts(app, hanging)
        ids = [d.id for d in first]
        pool.submit(hanging, ids[:2])  # one is made, one is left for the next batch
        pool.submit(hanging, ids[2:])  # two wait for it, one is turned away
        wait_until(lambda: trickler.requests == 1)
        time.sleep(0.5)
        assert trickler.requests == 1  # not two at once: the other fast thread is idle
        wait_until(lambda: failed(app, hanging) == 5)
        wait_until(lambda: not pool.webhooks[hanging].running)
    assert pool.webhooks[hanging].waiting == set()  # remembered as slow, nothing kept
    assert not pool.webhooks[hanging].turned_away
    # Their retries were written as each failed: in the order the attempts were made.
    retried = [d.event_id for d in attempts(app, hanging, attempt=2)]
    assert retried == [d.event_id for d in first]
    assert trickler.requests == 5


@SETTINGS
def test_the_task_hands_a_webhooks_batch_to_the_lanes_and_survives_its_errors(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    requeued: Requeued,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside eager mode the task returns at once and the process's lanes deliver; a
    batch whose writes fail is logged, and the webhook's next batch still runs."""
    # Never judged slow, however long the database takes on a loaded machine (half
    # the 1 s timeout per attempt put it in the slow lane, kept for ever).
    app.config["WEBHOOK_TIMEOUT_SECONDS"] = 10
    answering = hook(client, as_alice, receiver.url)
    quiet_stores(app, client, as_alice, stores(2), monkeypatch)
    first, second = (d.id for d in attempts(app, answering))
    real = delivery.attempt_batch
    calls: list[list[int]] = []

    def failing_once(ids: list[int], **_options: object) -> delivery.Made:
        calls.append(ids)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(ids, **_options)  # type: ignore[arg-type]

    monkeypatch.setattr(delivery, "attempt_batch", failing_once)
    app.config.update(CELERY_TASK_ALWAYS_EAGER=False)
    with app.app_context():
        pool = lanes.lanes(tasks.BATCH, requeued)
        assert pool is not None and lanes.lanes(tasks.BATCH, requeued) is pool  # one a process
        tasks.deliver_batch.run([first], answering)
        tasks.deliver_batch.run([second], answering)
    receiver.wait_for(lambda got: len(got) == 1, timeout=10)
    wait_until(lambda: answering not in pool.webhooks)
    assert calls == [[first], [second]]
    assert [d.status for d in attempts(app, answering)] == ["pending", "succeeded"]
    with app.app_context():
        app.config.update(WEBHOOK_DELIVERY_THREADS=0, WEBHOOK_SLOW_THREADS=0)
        assert lanes.lanes(tasks.BATCH, requeued) is None  # made in the task, as before
        app.config.update(CELERY_TASK_ALWAYS_EAGER=True, WEBHOOK_DELIVERY_THREADS=8)
        assert lanes.lanes(tasks.BATCH, requeued) is None
    pool.fast.shutdown(wait=True)
    pool.slow.shutdown(wait=True)
