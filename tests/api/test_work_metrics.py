"""The metrics of work outside a request, read from the /metrics text after the real
thing happened in process (tasks run eagerly): events counted once committed (a
refused change counts none), webhook attempts by outcome, jobs by kind and outcome.
tests/system/test_events_worker.py and test_job_worker.py scrape a real worker's port."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from core.jobs import worker_metrics
from core.web import metrics
from helpers import CatalogFactory, Client
from receiver import Receiver
from servers import call, sample, scrape

TOKEN = "metrics-token-0123456789"
LOCAL = pytest.mark.config(
    METRICS_TOKEN=TOKEN, WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True
)


def scraped(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by name and labels."""
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@LOCAL
def test_events_are_counted_when_committed_and_deliveries_by_outcome(
    client: Client, api: CatalogFactory, as_alice: dict[str, str], receiver: Receiver
) -> None:
    before = scraped(client)
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=as_alice
    ).json
    store = api.store(as_alice, "Counted")
    item = api.item(as_alice, store, "Jam", stock=5)
    refused = client.post("/stores", json={"name": "Counted"}, headers=as_alice)
    assert refused.status_code == 409  # rolled back: no event, nothing counted
    receiver.wait_for(lambda got: len(got) == 3, timeout=5)
    receiver.status = 500
    test = client.post(f"/webhooks/{hook['id']}/test", headers=as_alice)
    assert test.status_code == 202, test.json
    receiver.wait_for(lambda _got: receiver.hits == 4, timeout=5)
    after = scraped(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("stores_events_written_total", type="store.created") == 1
    assert grew("stores_events_written_total", type="item.created") == 1
    assert grew("stores_events_written_total", type="stock.moved") == 1
    assert grew("stores_events_written_total", type="webhook.test") == 1
    assert item["stock"] == 5
    delivered = "stores_webhook_delivery_duration_seconds_count"
    assert grew(delivered, outcome="delivered") == 3  # the store, the item, its stock
    # The test event's attempt failed, a retry is scheduled: "failed".
    assert grew(delivered, outcome="failed") == 1
    assert grew(delivered, outcome="gave_up") == 0
    assert grew("stores_webhook_delivery_duration_seconds_sum", outcome="delivered") > 0
    # A manual retry is never retried itself: its failure is the last ("gave_up").
    [failed] = [
        d
        for d in client.get(f"/webhooks/{hook['id']}/deliveries", headers=as_alice).json
        if d["status"] == "failed"
    ]
    retry = client.post(f"/webhooks/{hook['id']}/deliveries/{failed['id']}/retry", headers=as_alice)
    assert retry.status_code == 202, retry.json
    receiver.wait_for(lambda _got: receiver.hits == 5, timeout=5)
    again = scraped(client)
    assert (
        value(again, delivered, outcome="gave_up") - value(before, delivered, outcome="gave_up")
        == 1
    )
    assert (
        value(again, delivered, outcome="failed") - value(after, delivered, outcome="failed") == 0
    )


@pytest.mark.config(METRICS_TOKEN=TOKEN)
def test_a_finished_job_is_counted_by_kind_and_outcome(
    client: Client, api: CatalogFactory, as_alice: dict[str, str]
) -> None:
    store = api.store(as_alice)
    before = scraped(client)
    csv = "name,price,stock\nBread,2.50,\nMilk,1.10,12\n"
    good = client.post(
        f"/stores/{store['id']}/imports",
        data=csv.encode(),
        headers={**as_alice, "Content-Type": "text/csv"},
    )
    assert good.status_code == 202
    bad = client.post(
        f"/stores/{store['id']}/imports",
        data=b"name,price\nBread,free\n",
        headers={**as_alice, "Content-Type": "text/csv"},
    )
    assert bad.status_code == 202
    assert client.get(bad.json["links"]["self"], headers=as_alice).json["status"] == "failed"
    after = scraped(client)
    name = "stores_job_duration_seconds_count"
    for outcome in ("succeeded", "failed"):
        grew = value(after, name, kind="import", outcome=outcome)
        assert grew - value(before, name, kind="import", outcome=outcome) == 1, outcome
    assert (
        value(after, "stores_events_written_total", type="job.succeeded")
        - value(before, "stores_events_written_total", type="job.succeeded")
        == 1
    )


# --- the worker's own /metrics (tests/system/test_events_worker.py runs it for real) ---


def test_the_workers_metrics_answer_only_with_the_token(make_app: Callable[..., Flask]) -> None:
    app = make_app(METRICS_TOKEN=TOKEN, WORKER_METRICS_PORT=9199, WORKER_METRICS_HOST="127.0.0.1")
    assert app.extensions["celery"].stores_metrics == ("127.0.0.1", 9199, TOKEN)
    worker_metrics._started(SimpleNamespace(app=None))  # another Celery app: nothing served
    server = worker_metrics.serve("127.0.0.1", 0, TOKEN)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert call("GET", f"{url}/metrics").status_code == 401
        assert call("GET", f"{url}/metrics", token="wrong-token-0123").status_code == 401
        assert call("GET", f"{url}/other", token=TOKEN).status_code == 404
        metrics.job_finished("export", "succeeded", 0.5)
        samples = scrape(f"{url}/metrics", TOKEN)
        assert (
            sample(samples, "stores_job_duration_seconds_count", kind="export", outcome="succeeded")
            >= 1
        )
    finally:
        server.shutdown()
        server.server_close()


def test_the_worker_starts_its_children_on_an_empty_folder_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever is changed here is put back after the test (the test process keeps its
    # own registry).
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"a previous run's")
    monkeypatch.setenv(worker_metrics.VARIABLE, str(folder))
    worker_metrics._multiprocess_folder()
    assert list(folder.iterdir()) == []
    assert values.ValueClass is not values.MutexValue  # the children write to files
    worker_metrics._child_ended(pid=4242)  # a child gone: its live gauges dropped
    monkeypatch.delenv(worker_metrics.VARIABLE)
    worker_metrics._multiprocess_folder()  # none named: one made
    made = Path(os.environ[worker_metrics.VARIABLE])
    assert made.is_dir() and list(made.iterdir()) == []
    made.rmdir()
