"""The soak (issue 22): the service under a steady mixed load for SOAK_MINUTES (30 by
default), and what it looks like minute by minute.

- Two gunicorn instances (2 sync workers each, production settings) on one PostgreSQL
  database and one Redis, a Celery worker, and a local webhook receiver.
- 64 connections (wrk, 32 on each instance; bench/soak.lua): 80 % reads (lists, text
  search, cursor pages, single items), 20 % writes (new items, stock movements with an
  Idempotency-Key, one in ten a retry; batches of 5 new items).
- Each minute: throughput, p50/p95/p99 (of each instance; the higher of the two is
  reported, an upper bound of the whole's), 5xx, the RSS of the gunicorn workers and of
  the Celery worker, PostgreSQL connections, Redis memory, the outbox backlog.
- Drawn into docs/performance-soak.png; the table goes into docs/performance.md between
  its soak markers.

One webhook (every event type) points at the receiver; the worker runs beat too (the
outbox sweep). After the load, the run waits for the backlog to drain, then compares
the distinct events the receiver got (by their ``webhook-id``) with the events written.
The backlog is the events not yet numbered by the relay plus the deliveries pending.

    make bench-soak                      # 30 minutes
    SOAK_MINUTES=3 make bench-soak       # a short proof
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
import redis  # noqa: E402

from servers import BIN, Server, call, libpq, migrate, server_env, wait_until_up  # noqa: E402
from workers import Worker  # noqa: E402

WRK = shutil.which("wrk") or "wrk"
PASSWORD = "a long soak passw0rd"  # noqa: S105 - a throwaway database's admin
STORES = 20
ITEMS = 20_000
SEED = """
INSERT INTO stores (name, owner_id, created_at, updated_at)
SELECT 'Soak store ' || s, 1, now(), now() FROM generate_series(1, 20) s;
INSERT INTO items (name, description, price, stock, store_id, created_at, updated_at)
SELECT 'item ' || i,
       (ARRAY['red','green','blue','steel','oak','cotton'])[1 + i % 6] || ' thing ' || i,
       (i % 1000) / 10.0, 0, 1 + i % 20, now(), now()
FROM generate_series(1, 20000) i;
ANALYZE;
"""
MARK_START, MARK_END = "<!-- soak:start -->", "<!-- soak:end -->"
BACKLOG_SQL = """
SELECT (SELECT count(*) FROM events WHERE seq IS NULL)
     + (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')
"""
EVENTS_SQL = "SELECT count(*) FROM events WHERE webhook_id IS NULL"
DRAIN_SECONDS = 600  # the longest wait for the backlog after the load


@dataclass
class Minute:
    minute: int
    requests: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    s5xx: int
    s4xx: int
    socket_errors: int
    gunicorn_rss_mb: float
    celery_rss_mb: float
    pg_connections: int
    redis_mb: float
    backlog: int | None


class Receiver(http.server.BaseHTTPRequestHandler):
    count = 0  # every delivery, repeats included
    seen: set[str] = set()  # distinct webhook-id values: events delivered
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with Receiver.lock:
            Receiver.count += 1
            Receiver.seen.add(self.headers.get("webhook-id", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found[1]) if found else 0
    return total / 1024


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *descendants(child)]
    return found


def flask(env: dict[str, str], *args: str) -> None:
    subprocess.run(  # noqa: S603 - our own command line
        [BIN / "flask", "--app", "app", *args], cwd=ROOT, env=env, check=True, timeout=600
    )


def prepare(database: str, env: dict[str, str]) -> None:
    migrate(env)
    flask(env, "create-admin", "--username", "soak", "--email", "soak@example.com",
          "--password", PASSWORD)  # fmt: skip
    with psycopg.connect(libpq(database), autocommit=True) as conn:
        for statement in SEED.split(";\n"):
            if statement.strip():
                conn.execute(statement)


def cursors(base: str) -> list[str]:
    """Real cursor URLs: the next links of a few list walks."""
    found = []
    for sort in ("name", "-price", "id"):
        path = f"/items?page_size=20&sort={sort}"
        for _ in range(10):
            answer = call("GET", base + path)
            link = re.search(r"<([^>]+)>; rel=\"next\"", answer.headers.get("Link", ""))
            if not link:
                break
            path = link[1].removeprefix(base)
            found.append(path)
    return found


def wrk_minute(urls: list[str], scripts: list[Path], connections: int) -> list[dict[str, Any]]:
    """One minute of load, ``connections`` split over the instances; each wrk's summary."""
    per = connections // len(urls)
    processes = [
        subprocess.Popen(  # noqa: S603 - wrk on our own servers
            [WRK, "-t2", f"-c{per}", "-d60s", "--timeout", "10s", "-s", str(script), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url, script in zip(urls, scripts, strict=True)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        line = next((x for x in out.splitlines() if x.startswith("SOAK ")), None)
        if line is None:
            raise RuntimeError(f"wrk said:\n{out}")
        results.append(json.loads(line[5:]))
    return results


def sample(
    minute: int,
    runs: list[dict[str, Any]],
    servers: list[Server],
    celery: subprocess.Popen[bytes] | None,
    database: str,
    broker: redis.Redis,
) -> Minute:
    requests = sum(r["requests"] for r in runs)
    seconds = max(r["seconds"] for r in runs)
    workers = [pid for server in servers for pid in server.workers()]
    with psycopg.connect(libpq(database), autocommit=True) as conn:
        (connections,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone() or (0,)
        (backlog,) = conn.execute(BACKLOG_SQL).fetchone() or (None,)
    return Minute(
        minute=minute,
        requests=requests,
        throughput=round(requests / seconds, 1),
        p50_ms=max(r["p50"] for r in runs),
        p95_ms=max(r["p95"] for r in runs),
        p99_ms=max(r["p99"] for r in runs),
        s5xx=sum(r["s5xx"] for r in runs),
        s4xx=sum(r["s4xx"] for r in runs),
        socket_errors=sum(r["errors"] for r in runs),
        gunicorn_rss_mb=round(rss_mb(workers), 1),
        celery_rss_mb=round(rss_mb([celery.pid, *descendants(celery.pid)]), 1) if celery else 0,
        pg_connections=connections - 1,  # not this one
        redis_mb=round(int(broker.info("memory")["used_memory"]) / 2**20, 2),  # type: ignore[index]
        backlog=backlog,
    )


def plot(minutes: list[Minute], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [m.minute for m in minutes]
    panels: list[tuple[str, list[tuple[str, list[float]]]]] = [
        ("throughput (req/s)", [("req/s", [m.throughput for m in minutes])]),
        (
            "latency (ms)",
            [
                ("p50", [m.p50_ms for m in minutes]),
                ("p95", [m.p95_ms for m in minutes]),
                ("p99", [m.p99_ms for m in minutes]),
            ],
        ),
        ("5xx per minute", [("5xx", [m.s5xx for m in minutes])]),
        (
            "RSS (MB)",
            [
                ("gunicorn workers (4)", [m.gunicorn_rss_mb for m in minutes]),
                ("celery worker", [m.celery_rss_mb for m in minutes]),
            ],
        ),
        ("PostgreSQL connections", [("connections", [m.pg_connections for m in minutes])]),
        ("Redis used memory (MB)", [("MB", [m.redis_mb for m in minutes])]),
    ]
    figure, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        for label, values in series:
            ax.plot(x, values, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
    for ax in axes[-1]:
        ax.set_xlabel("minute")
    figure.suptitle(f"Soak: {len(minutes)} minutes, 64 connections, 2 gunicorns + Celery")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def table(minutes: list[Minute], notes: list[str]) -> str:
    head = (
        "| min | req/s | p50 ms | p95 ms | p99 ms | 5xx | 4xx | gunicorn RSS MB | "
        "celery RSS MB | PG conns | Redis MB | backlog |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = "".join(
        f"| {m.minute} | {m.throughput:.0f} | {m.p50_ms:.1f} | {m.p95_ms:.1f} | "
        f"{m.p99_ms:.1f} | {m.s5xx} | {m.s4xx} | {m.gunicorn_rss_mb:.0f} | "
        f"{m.celery_rss_mb:.0f} | {m.pg_connections} | {m.redis_mb:.2f} | "
        f"{'n/a' if m.backlog is None else m.backlog} |\n"
        for m in minutes
    )
    return head + rows + "\n" + "".join(f"- {note}\n" for note in notes)


def write_docs(minutes: list[Minute], notes: list[str], docs: Path) -> None:
    plot(minutes, docs / "performance-soak.png")
    page = docs / "performance.md"
    text = page.read_text() if page.exists() else ""
    block = f"{MARK_START}\n{table(minutes, notes)}{MARK_END}"
    if MARK_START in text:
        text = re.sub(
            f"{re.escape(MARK_START)}.*?{re.escape(MARK_END)}", lambda _: block, text, flags=re.S
        )
    else:
        text += f"\n{block}\n"
    page.write_text(text)


def refusals(logs: list[str]) -> list[str]:
    """The 4xx answers by method, path shape and status, from the servers' access lines
    (written at WARNING, so LOG_LEVEL=WARNING keeps exactly these)."""
    found: dict[str, int] = {}
    for line in "\n".join(logs).splitlines():
        if not line.startswith("{") or '"stores.access"' not in line:
            continue
        entry = json.loads(line)
        if 400 <= entry.get("status", 0) < 500:
            shape = re.sub(r"/\d+", "/{id}", entry["path"])
            key = f"{entry['method']} {shape} {entry['status']}"
            found[key] = found.get(key, 0) + 1
    return [f"{key}: {count}" for key, count in sorted(found.items(), key=lambda kv: -kv[1])]


def verdicts(minutes: list[Minute], delivered: int, events: int, drained: str) -> list[str]:
    notes = []
    errors = sum(m.s5xx for m in minutes)
    timeouts = sum(m.socket_errors for m in minutes)
    notes.append(
        f"5xx: {errors} in {sum(m.requests for m in minutes)} requests; "
        f"{timeouts} requests failed at the socket (wrk's 10 s timeout included)."
    )
    warm = minutes[min(1, len(minutes) - 1)]
    growth = (minutes[-1].gunicorn_rss_mb - warm.gunicorn_rss_mb) / warm.gunicorn_rss_mb
    notes.append(
        f"gunicorn workers' RSS from minute {warm.minute} to {minutes[-1].minute}: "
        f"{warm.gunicorn_rss_mb:.0f} -> {minutes[-1].gunicorn_rss_mb:.0f} MB ({growth:+.1%})."
    )
    notes.append(
        f"PostgreSQL connections at most {max(m.pg_connections for m in minutes)} "
        f"(4 gunicorn workers, the Celery worker's 2 processes and beat); Redis at most "
        f"{max(m.redis_mb for m in minutes):.2f} MB (the whole server, shared)."
    )
    later = [m.p99_ms for m in minutes if m.minute >= 5] or [m.p99_ms for m in minutes]
    first = 5 if len(minutes) >= 5 else 1
    notes.append(f"p99 from minute {first} on: {min(later):.0f} to {max(later):.0f} ms.")
    notes.append(
        f"Webhooks: {events} events written; the receiver got {delivered} distinct events "
        f"({Receiver.count} deliveries, repeats included) once the backlog had drained"
        f" ({drained}); backlog at most {max(m.backlog or 0 for m in minutes)} during the load."
    )
    return notes


def drain(database: str) -> str:
    """Waits until the backlog is empty (or DRAIN_SECONDS pass); says how long it took."""
    start = time.monotonic()
    with psycopg.connect(libpq(database), autocommit=True) as conn:
        while time.monotonic() - start < DRAIN_SECONDS:
            (backlog,) = conn.execute(BACKLOG_SQL).fetchone() or (0,)
            if not backlog:
                return f"empty {time.monotonic() - start:.0f} s after the load"
            time.sleep(2)
    return f"{backlog} left after {DRAIN_SECONDS} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a database to create and drop")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--minutes", type=int, default=int(os.environ.get("SOAK_MINUTES", 30)))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if not args.redis_url:
        parser.error("--redis-url (or REDIS_URL) is needed: rate limits, replays, the broker")

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(args.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    database = url.render_as_string(hide_password=False)
    prefix = f"stores_soak_{uuid.uuid4().hex[:8]}"
    env = server_env(
        APP_ENV="production",
        DATABASE_URL=database,
        REDIS_URL=args.redis_url,
        REDIS_KEY_PREFIX=prefix,
        RATE_LIMIT_DEFAULT="100000000 per minute",
        JWT_ACCESS_TOKEN_EXPIRES=str(24 * 3600),
        METRICS_TOKEN=uuid.uuid4().hex,
        LOG_LEVEL="WARNING",
        IDEMPOTENCY_QUOTA_KEYS="10000000",  # one caller makes every write: no daily cap
        WEBHOOK_ALLOW_HTTP="1",  # the receiver is http://127.0.0.1
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="1",
    )
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    broker = redis.Redis.from_url(args.redis_url)
    folder = Path(tempfile.mkdtemp(prefix="stores_soak_"))
    servers: list[Server] = []
    celery = None
    try:
        prepare(database, env)
        servers = [Server(env, workers=2) for _ in range(2)]
        for server in servers:  # a busy machine boots slowly
            wait_until_up(server.url, server.process, workers=2, timeout=180)
        celery = Worker(env, concurrency=2, beat=True).start()
        base = servers[0].url
        login = call("POST", f"{base}/login", {"username": "soak", "password": PASSWORD})
        token = login.json["access_token"]
        hook = call(
            "POST",
            f"{base}/webhooks",
            {"url": f"http://127.0.0.1:{receiver.server_address[1]}/hook", "events": ["*"]},
            token=token,
        )
        if hook.status_code != 201:
            raise RuntimeError(f"POST /webhooks: {hook.status_code} {hook.json}")
        template = (ROOT / "bench" / "soak.lua").read_text()
        found = cursors(base)
        scripts = [folder / f"soak-{index}.lua" for index in range(len(servers))]
        for index, script in enumerate(scripts):
            script.write_text(
                template.replace("@TOKEN@", token)
                .replace("@SALT@", str(1000 * (index + 1)))
                .replace("@ITEMS@", str(ITEMS))
                .replace("@STORES@", str(STORES))
                .replace("@CURSORS@", ", ".join(json.dumps(c) for c in found))
            )
        print(f"{len(found)} cursors; {args.minutes} minutes", flush=True)
        minutes: list[Minute] = []
        for minute in range(1, args.minutes + 1):
            runs = wrk_minute([s.url for s in servers], scripts, args.connections)
            minutes.append(sample(minute, runs, servers, celery.process, database, broker))
            print(json.dumps(asdict(minutes[-1])), flush=True)
        drained = drain(database)
        with psycopg.connect(libpq(database), autocommit=True) as conn:
            (events,) = conn.execute(EVENTS_SQL).fetchone() or (0,)
        notes = verdicts(minutes, len(Receiver.seen), events, drained)
        refused = refusals([server.log() for server in servers])
        notes.append("4xx by kind: " + ("; ".join(refused[:6]) or "none") + ".")
        for note in notes:
            print(note)
        write_docs(minutes, notes, args.docs)
        for server in servers:
            if "Traceback" in server.log():
                print(f"{server}: a traceback in its log:\n{server.log()[-3000:]}")
    finally:
        if celery is not None:
            celery.stop()
        for server in servers:
            server.stop()
        receiver.shutdown()
        for key in broker.scan_iter(f"*{prefix}*"):
            broker.delete(key)
        shutil.rmtree(folder, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
