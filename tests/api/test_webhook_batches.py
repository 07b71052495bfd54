"""Deliveries in batches (core/events/delivery.py): a webhook's due attempts are POSTed
in order over one connection, each still an attempt of its own in the log, retried
and counted as if made one by one (contract §11). Tasks run eagerly here, to a real
receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from core.events import delivery, relay, sender, tasks
from db import db
from helpers import Client, client_of, meanwhile, quiet_stores
from models import Delivery, Webhook
from receiver import Receiver

LOCAL = {"WEBHOOK_ALLOW_HTTP": True, "WEBHOOK_ALLOW_PRIVATE_NETWORKS": True}


def log_of(client: Client, headers: dict[str, str], webhook_id: int) -> list[dict[str, Any]]:
    """The delivery log, oldest first."""
    response = client.get(f"/webhooks/{webhook_id}/deliveries?page_size=100", headers=headers)
    assert response.status_code == 200, response.json
    return list(reversed(response.json))


def names(receiver: Receiver) -> list[str]:
    return [json.loads(body)["data"]["object"]["name"] for body in receiver.bodies()]


@pytest.mark.config(**LOCAL, WEBHOOK_RETRY_SCHEDULE=[0.0], WEBHOOK_RETRY_JITTER=0.0)
def test_one_failure_in_a_batch_is_retried_alone_and_the_rest_succeed(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    quiet_stores(app, client, as_alice, ["First", "Bad", "Third"], monkeypatch)
    events = [e["id"] for e in client.get("/events", headers=as_alice).json]
    receiver.refuse = lambda body: b'"Bad"' in body
    with app.app_context():
        tasks.sweep.apply()
    assert receiver.hits == 3
    assert names(receiver) == ["First", "Third"]  # in order, the refused one between
    assert len({r.client_port for r in receiver.received}) == 1  # over one connection
    log = log_of(client, as_alice, hook["id"])
    assert [(d["event_id"], d["attempt"], d["status"]) for d in log] == [
        (events[0], 1, "succeeded"),
        (events[1], 1, "failed"),
        (events[2], 1, "succeeded"),
        (events[1], 2, "pending"),  # the failure's retry, scheduled
    ]
    assert [d["response_status"] for d in log[:3]] == [200, 500, 200]
    assert log[0]["response_body"] == "ok" and log[0]["error"] is None
    assert log[1]["error"].startswith("HTTP 500") and log[1]["next_attempt_at"] is not None
    assert all(d["duration_ms"] is not None and d["duration_ms"] >= 0 for d in log[:3])
    with app.app_context():
        # Counted as if written one by one: the success after the failure reset it.
        assert db.session.get_one(Webhook, hook["id"]).consecutive_failures == 0
    receiver.refuse = None
    with app.app_context():
        tasks.sweep.apply()  # the retry's time has come
    assert names(receiver) == ["First", "Third", "Bad"]
    retried = log_of(client, as_alice, hook["id"])[3]
    assert (retried["attempt"], retried["status"], retried["response_status"]) == (
        2,
        "succeeded",
        200,
    )


@pytest.mark.config(**LOCAL, WEBHOOK_RETRY_SCHEDULE=[0.0], WEBHOOK_RETRY_JITTER=0.0)
def test_each_attempt_is_sent_in_the_trace_of_the_request_that_made_its_event(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two requests in traces of their own; their events sent later, in one batch of
    the sweep, and one again as a retry: each POST's ``traceparent`` is its event's
    trace, with a span of its own. Before, an attempt went in the trace of the task
    that made it: the sweep's own, or the first request's when one relay gathered
    several requests' events."""
    client.post("/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice)
    traces = {name: uuid.uuid4().hex for name in ("First", "Second")}
    for name, trace_id in traces.items():
        caller = {**as_alice, "traceparent": f"00-{trace_id}-{'ab' * 8}-01"}
        quiet_stores(app, client, caller, [name], monkeypatch)
    receiver.refuse = lambda body: b'"Second"' in body
    with app.app_context():
        tasks.sweep.apply()
        receiver.refuse = None
        tasks.sweep.apply()  # the retry
    sent = [
        (json.loads(r.body)["data"]["object"]["name"], r.headers["traceparent"].split("-"))
        for r in receiver.received
    ]
    assert receiver.hits == 3  # the refused attempt, then its retry: accepted
    assert [(name, parts[1]) for name, parts in sent] == [
        ("First", traces["First"]),
        ("Second", traces["Second"]),  # the retry, still in its request's trace
    ]
    spans = [parts[2] for _name, parts in sent]
    assert len(set(spans)) == 2 and "ab" * 8 not in spans  # each attempt a span of its own


@pytest.mark.config(**LOCAL, WEBHOOK_DISABLE_AFTER=50)
def test_a_failure_last_in_a_batch_is_counted_after_its_successes(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    quiet_stores(app, client, as_alice, ["One", "Two", "Bad"], monkeypatch)
    receiver.refuse = lambda body: b'"Bad"' in body
    with app.app_context():
        tasks.sweep.apply()
        assert db.session.get_one(Webhook, hook["id"]).consecutive_failures == 1
    assert names(receiver) == ["One", "Two"]


@pytest.mark.config(**LOCAL, WEBHOOK_TIMEOUT_SECONDS=1)
def test_a_slow_receiver_gets_the_rest_of_a_batch_from_the_next_task(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch starts no POST once its time (the timeout) is spent: what it had no time
    for is released and queued again, not failed; every event arrives once."""
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    stores = ["A", "B", "C", "D"]
    quiet_stores(app, client, as_alice, stores, monkeypatch)
    receiver.delay = 0.4
    with app.app_context():
        tasks.sweep.apply()
    assert names(receiver) == stores
    assert len({r.client_port for r in receiver.received}) >= 2  # another task's connection
    log = log_of(client, as_alice, hook["id"])
    assert [(d["attempt"], d["status"]) for d in log] == [(1, "succeeded")] * 4


def test_a_connection_the_receiver_closed_is_opened_again() -> None:
    """A receiver may close a kept-alive connection between two POSTs without a word:
    the second POST goes over a new connection, and succeeds."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve_one_request_per_connection() -> None:
        for _ in range(2):
            conn, peer = server.accept()
            accepted.append(peer[1])
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                time.sleep(0.05)  # then closed, though HTTP/1.1 keeps it open

    thread = threading.Thread(target=serve_one_request_per_connection, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    with (
        server,
        sender.Target(url, timeout=5, allow_http=True, allow_private=True) as target,
    ):
        first = target.post(b"{}", {"Content-Type": "application/json"})
        time.sleep(0.2)  # the receiver has closed it by now
        second = target.post(b"{}", {"Content-Type": "application/json"})
        thread.join(timeout=5)
    assert (first.ok, first.status, first.body) == (True, 200, "ok")
    assert (second.ok, second.status, second.body) == (True, 200, "ok")
    assert len(accepted) == 2 and accepted[0] != accepted[1]


@pytest.mark.config(**LOCAL, WEBHOOK_RETRY_SCHEDULE=[3600.0])
@pytest.mark.parametrize(
    ("status", "answer", "kept"),
    [
        (200, b"ok\x00ok", "ok\ufffdok"),
        (500, b"ok\x00ok", "ok\ufffdok"),
        (200, '{"ok":true}'.encode("utf-16-le"), '{\ufffd"\ufffdo\ufffdk\ufffd"'),
    ],
    ids=["2xx", "5xx", "utf-16"],
)
def test_an_answer_holding_a_nul_byte_is_recorded_without_it(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    answer: bytes,
    kept: str,
) -> None:
    """PostgreSQL refuses a NUL in text: an answer holding one (a C string, UTF-16)
    once failed the outcomes' write, left the batch claimed, and the sweep sent it
    again for ever. The answer is kept with U+FFFD for the NUL, and the batch ends."""
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    quiet_stores(app, client, as_alice, ["One", "Two"], monkeypatch)
    receiver.status, receiver.answer = status, answer
    with app.app_context():
        tasks.sweep.apply()
    assert receiver.hits == 2
    log = log_of(client, as_alice, hook["id"])
    made = [d for d in log if d["status"] != "pending"]
    assert [d["response_status"] for d in made] == [status, status]
    assert all(d["response_body"].startswith(kept) for d in made), made
    if status == 200:
        assert [d["status"] for d in log] == ["succeeded", "succeeded"]
    else:
        assert [(d["attempt"], d["status"]) for d in log] == [
            (1, "failed"),
            (1, "failed"),
            (2, "pending"),
            (2, "pending"),
        ]
        assert all(d["error"].startswith("HTTP 500") for d in made)
    with app.app_context():
        tasks.sweep.apply()  # nothing left to send again
    assert receiver.hits == 2


@pytest.mark.postgres
@pytest.mark.config(**LOCAL, WEBHOOK_RETRY_SCHEDULE=[3600.0])
def test_outcomes_the_database_refuses_are_recorded_without_their_answers(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net under the fix above: an answer the database refuses for a
    reason nobody foresaw (here the NUL, let through) still ends its attempt, succeeded
    or failed as it was, noted as not recorded; it is not sent again and again."""
    monkeypatch.setattr(sender, "_storable", lambda text: text)
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    quiet_stores(app, client, as_alice, ["One", "Bad", "Three"], monkeypatch)
    receiver.answer = b"ok\x00"
    receiver.refuse = lambda body: b'"Bad"' in body
    with app.app_context():
        tasks.sweep.apply()
        tasks.sweep.apply()  # nothing left to send again
    assert receiver.hits == 3
    log = log_of(client, as_alice, hook["id"])
    assert [(d["attempt"], d["status"], d["response_status"]) for d in log] == [
        (1, "succeeded", 200),
        (1, "failed", 500),
        (1, "succeeded", 200),
        (2, "pending", None),  # the failure's retry, scheduled
    ]
    assert [d["response_body"] for d in log[:3]] == [None, None, None]
    assert {d["error"] for d in log[:3]} == {delivery.UNRECORDED}
    with app.app_context():
        assert db.session.get_one(Webhook, hook["id"]).consecutive_failures == 0


@pytest.mark.config(**LOCAL, WEBHOOK_RETRY_SCHEDULE=[3600.0], WEBHOOK_DISABLE_AFTER=3)
def test_a_batch_that_disables_its_webhook_sends_nothing_past_that_failure(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's outcomes are written after its POSTs: counting its failures only then,
    it once POSTed the whole batch and the disable then logged the attempts after the
    limit as "The webhook was disabled.", unanswered, though the receiver had got (and
    even accepted) them. It counts them as it goes (from the webhook's count at the
    claim, a success resetting it) and stops at the limit; each POST made keeps its
    own answer in the log, and only the attempts not made end as disabled."""
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    stores = ["A", "OK", "C", "D", "E", "F", "G"]
    quiet_stores(app, client, as_alice, stores, monkeypatch)
    with app.app_context():
        db.session.execute(update(Webhook).values(consecutive_failures=1))
        db.session.commit()
    receiver.refuse = lambda body: b'"OK"' not in body  # 500, but for "OK"
    with app.app_context():
        tasks.sweep.apply()
    # A: 2 failures, OK: 0, C, D: 2, E: 3, the limit: F and G are not sent.
    assert receiver.hits == 5
    assert client.get(f"/webhooks/{hook['id']}", headers=as_alice).json["enabled"] is False
    events = client.get("/events?type=store.created", headers=as_alice).json
    name_of = {e["id"]: e["data"]["object"]["name"] for e in events}
    firsts = [d for d in log_of(client, as_alice, hook["id"]) if d["attempt"] == 1]
    assert [
        (name_of[d["event_id"]], d["status"], d["response_status"], d["error"]) for d in firsts
    ] == [
        ("A", "failed", 500, firsts[0]["error"]),
        ("OK", "succeeded", 200, None),
        ("C", "failed", 500, firsts[0]["error"]),
        ("D", "failed", 500, firsts[0]["error"]),
        ("E", "failed", 500, firsts[0]["error"]),
        ("F", "failed", None, "The webhook was disabled."),
        ("G", "failed", None, "The webhook was disabled."),
    ]
    assert firsts[0]["error"].startswith("HTTP 500")
    answered = [d for d in firsts if d["response_status"] is not None]
    assert len(answered) == receiver.hits
    with app.app_context():
        # The attempts it ended, claimed by the batch, are not left "running".
        claimed = select(Delivery.id).where(Delivery.running_until.is_not(None))
        assert db.session.scalars(claimed).all() == []
        tasks.sweep.apply()  # nothing left to send
    assert receiver.hits == 5


@pytest.mark.config(**LOCAL, WEBHOOK_RETRY_SCHEDULE=[3600.0])
@pytest.mark.parametrize("change", ["deleted", "disabled", "moved"])
def test_a_webhook_changed_mid_batch_gets_nothing_more_as_it_was(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """Its owner deletes the webhook, disables it or points it elsewhere while a batch
    POSTs to it: the batch reads the webhook again before its next POST (here before
    each) and sends the old address nothing more. It POSTed on for seconds, the rest
    of the batch."""
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    quiet_stores(app, client, as_alice, ["A", "B", "C", "D"], monkeypatch)
    monkeypatch.setattr(delivery, "RECHECK_SECONDS", 0.0)
    path = f"/webhooks/{hook['id']}"
    other = client_of(app)
    answers = []

    def change_on_the_first(_body: bytes) -> bool:
        if receiver.hits == 1:
            if change == "deleted":
                answers.append(other.delete(path, headers=as_alice).status_code)
            else:
                body = {"enabled": False} if change == "disabled" else {"url": receiver.url + "2"}
                answers.append(other.patch(path, json=body, headers=as_alice).status_code)
        return False

    receiver.refuse = change_on_the_first
    with app.app_context():
        tasks.sweep.apply()
        tasks.sweep.apply()  # what was released: made as the webhook now is
    assert answers == [204 if change == "deleted" else 200]
    sent = Counter(r.path for r in receiver.received)
    assert sent["/hook"] == 1
    assert sent["/hook2"] == (3 if change == "moved" else 0)


@pytest.mark.postgres
@pytest.mark.config(**LOCAL)
@pytest.mark.parametrize("ok", [False, True], ids=["failure", "success"])
def test_an_outcome_written_while_its_webhook_is_deleted_does_not_deadlock(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    ok: bool,
) -> None:
    """Deleting a webhook (itself, its owner, its store) locks it, then its deliveries
    (the cascade). An outcome's write locked the delivery, then the webhook (its failure
    count): each waited for the other, PostgreSQL ended one, and the deletion answered
    503. The write now takes the webhook first. The deletion starts while the write
    holds its first lock: before a failure's first statement (the delivery was already
    locked), after a success's."""
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    quiet_stores(app, client, as_alice, ["Shop"], monkeypatch)
    answers: list[int] = []

    def delete_the_webhook() -> None:
        answers.append(client.delete(f"/webhooks/{hook['id']}", headers=as_alice).status_code)

    with app.app_context():
        # A count to reset: a success writes the webhook only then.
        db.session.execute(update(Webhook).values(consecutive_failures=1))
        db.session.commit()
        [delivery_id] = db.session.scalars(select(Delivery.id)).all()
        result = sender.Result(ok=ok, status=200 if ok else 500, body="", error=None)
        thread = meanwhile(monkeypatch, db.session, "execute", delete_the_webhook, first=not ok)
        delivery._write([(delivery_id, result)])
        thread.join(timeout=30)
        db.session.remove()
    assert answers == [204]
    assert client.get(f"/webhooks/{hook['id']}", headers=as_alice).status_code == 404
    with app.app_context():
        assert db.session.scalars(select(Delivery.id)).all() == []


@pytest.mark.config(**LOCAL)
def test_one_webhooks_backlog_leaves_room_in_the_sweep_for_another(
    app: Flask,
    client: Client,
    as_alice: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep takes each webhook's oldest due attempts in turns, so many at most: a
    backlog older than another webhook's attempt (a receiver that hangs, due again and
    again) does not keep that one out (before: the oldest of all, the backlog's only)."""
    body = {"url": receiver.url, "events": ["*"]}
    backlog = client.post("/webhooks", json=body, headers=as_alice).json["id"]
    quiet_stores(app, client, as_alice, [f"Old {n}" for n in range(6)], monkeypatch)
    other = client.post("/webhooks", json=body, headers=as_alice).json["id"]
    quiet_stores(app, client, as_alice, ["New"], monkeypatch)
    with app.app_context():
        # In turns: each webhook's oldest first, then each one's next.
        due = relay.due_deliveries(limit=2, per_webhook=3)
        assert Counter(webhook for webhook, _ in due) == {backlog: 1, other: 1}
        # Those are queued now; the backlog's next, three at most in one sweep.
        for left in (3, 3, 0):
            due = relay.due_deliveries(limit=10, per_webhook=3)
            assert Counter(webhook for webhook, _ in due) == ({backlog: left} if left else {})
