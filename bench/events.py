"""Benchmark: events and webhooks on PostgreSQL, through gunicorn, a private Redis
broker and real Celery workers, to a receiver on 127.0.0.1 (issue 18).

1. Latency: 2,000 stock movements at 50 per second with one webhook and two worker
   processes; p50/p95 from the event's commit to the receiver.
2. Throughput of delivery: 2,000 events written while no worker runs, then two
   worker processes start: deliveries per second from the first to the last.
3. Write throughput of POST /items/{id}/stock with a webhook and its workers on, and
   with neither (the webhook disabled, the workers frozen; the outbox still written),
   in alternating rounds: the ratio, and the CPU each part spent per write.

    .venv/bin/python bench/events.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from receiver import Receiver, receiving  # noqa: E402
from servers import call, gunicorn, migrate, postgres_database, server_env  # noqa: E402
from workers import redis_server, workers  # noqa: E402

SETTINGS = {
    "APP_ENV": "production",
    "WEBHOOK_ALLOW_HTTP": "1",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
    "RATE_LIMIT_DEFAULT": "10000000 per minute",
    "AUTH_RATE_LIMIT": "1000 per minute",
    "REDIS_URL": "",
    "LOG_LEVEL": "WARNING",
}
ITEMS = 20
WARM_UP = 200  # writes delivered before the rounds
# libpq's PGAPPNAME names each side's PostgreSQL sessions (pg_stat_activity's
# application_name), so that --worker-cpu can place the backends with their clients.
WEB_SESSIONS = "bench-events-web"
WORKER_SESSIONS = "bench-events-worker"


def cpu_seconds(database: str) -> dict[str, float]:
    """CPU (user + system) used so far by each part of this benchmark's work: web
    (gunicorn), worker (Celery), broker (redis-server), bench (this process: the
    clients and the receiver), each counted only if this process started it, and
    database (the PostgreSQL backends of ``database``, the server's own processes:
    checkpointer, WAL writer, autovacuum, and the backends that ended, which the
    server counts whatever their database). Other work on the machine is left out,
    but for the backends it ends meanwhile: run it alone."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(("web", "worker", "database", "broker", "bench"), 0.0)
    processes: dict[int, tuple[int, bytes, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        # utime, stime, and those of its children that ended (a recycled gunicorn worker)
        seconds = sum(int(value) for value in fields[11:15]) / ticks
        processes[int(entry.name)] = (int(fields[1]), command, seconds)  # ppid

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = processes[pid][0] if pid in processes else 1
        return False

    for pid, (_ppid, command, seconds) in processes.items():
        if pid == os.getpid():
            used["bench"] += seconds
        elif command.split(b"\0")[0].endswith(b"/postgres"):
            used["database"] += seconds  # the server: with the backends that ended
        elif command.startswith(b"postgres: "):
            backend = f" {database} ".encode() in command
            if backend or not re.search(rb"postgres: [^:]+: \S+ \S+ [0-9.(]", command):
                used["database"] += seconds
        elif ours(pid):
            if b"gunicorn" in command:
                used["web"] += seconds
            elif b"celery" in command:
                used["worker"] += seconds
            elif command.startswith(b"redis-server"):
                used["broker"] += seconds
    return used


CPU_PARTS = ("web", "worker", "database", "broker", "bench", "total")


def cpu_per_write(
    before: dict[str, float], count: int, prefix: str, database: str
) -> dict[str, float]:
    """CPU milliseconds per write of each part since ``before``, keys ``prefix`` + part."""
    after = cpu_seconds(database)
    used = {part: after[part] - before[part] for part in before}
    used["total"] = sum(used.values())
    return {prefix + part: seconds / count * 1000 for part, seconds in used.items()}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def setup(base: str) -> tuple[dict[str, str], list[int]]:
    user = {"username": "bench", "email": "bench@example.com", "password": "a long passw0rd"}
    assert call("POST", f"{base}/register", user).status_code == 201
    tokens = call("POST", f"{base}/login", {"username": "bench", "password": user["password"]})
    auth = {"Authorization": f"Bearer {tokens.json['access_token']}"}
    store = call("POST", f"{base}/stores", {"name": "Bench"}, headers=auth).json["id"]
    items = []
    for n in range(ITEMS):
        body = {"name": f"Item {n}", "price": 1, "store_id": store, "stock": 1_000_000}
        items.append(call("POST", f"{base}/items", body, headers=auth).json["id"])
    return auth, items


def sell(base: str, auth: dict[str, str], item: int) -> None:
    body = {"delta": -1, "reason": "sale"}
    response = call("POST", f"{base}/items/{item}/stock", body, headers=auth, timeout=60)
    assert response.status_code == 201, response


def arrivals(receiver: Receiver, since: int) -> list[tuple[float, dict[str, Any]]]:
    with receiver.lock:
        return [(r.at, json.loads(r.body)) for r in receiver.received[since:]]


def latency(
    base: str, auth: dict[str, str], items: list[int], receiver: Receiver, count: int, rate: float
) -> dict[str, float]:
    start = len(receiver.received)
    wall_start = time.time()
    interval = 1 / rate
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = []
        for n in range(count):
            delay = began + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(sell, base, auth, items[n % len(items)]))
        for future in futures:
            future.result()
    sent_for = time.monotonic() - began
    receiver.wait_for(lambda got: len(got) - start >= count, timeout=300)
    delays = [
        at - datetime.fromisoformat(event["created_at"]).timestamp()
        for at, event in arrivals(receiver, start)
        if datetime.fromisoformat(event["created_at"]).timestamp() >= wall_start
    ]
    return {
        "events": len(delays),
        "sent_per_s": count / sent_for,
        "p50_ms": percentile(delays, 50) * 1000,
        "p95_ms": percentile(delays, 95) * 1000,
        "max_ms": max(delays) * 1000,
    }


def backlog(base: str, auth: dict[str, str], items: list[int], count: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: sell(base, auth, items[n % len(items)]), range(count)))


def throughput(
    base: str, auth: dict[str, str], items: list[int], count: int, threads: int = 8
) -> float:
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda n: sell(base, auth, items[n % threads]), range(count)))
    return count / (time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server (any database)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--writes", type=int, default=1500)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="of writes on, then off")
    parser.add_argument(
        "--worker-cpu",
        action="store_true",
        help="two machines: the worker's side on the last CPU, the web's on the others",
    )
    args = parser.parse_args()

    with postgres_database(args.database_url, "bench_events_") as url, redis_server() as broker:
        env = server_env(**SETTINGS, DATABASE_URL=url, CELERY_BROKER_URL=broker.url)
        migrate(env)
        web_env = {**env, "PGAPPNAME": WEB_SESSIONS}
        env["PGAPPNAME"] = WORKER_SESSIONS
        with gunicorn(web_env, workers=args.web_workers) as base, receiving() as receiver:
            auth, items = setup(base)
            body = {"url": receiver.url, "events": ["stock.moved"]}
            hook = call("POST", f"{base}/webhooks", body, headers=auth).json

            # 2: a backlog written while no worker runs, then two worker processes.
            backlog(base, auth, items, args.events)
            with workers(env, count=2, concurrency=4):
                # The items' first counts (setup) are movements too: ITEMS more events.
                receiver.wait_for(lambda got: len(got) >= args.events + ITEMS, timeout=900)
                got = arrivals(receiver, 0)
                drained = len(got) / (got[-1][0] - got[0][0])
                print(
                    f"2. backlog of {args.events} drained by 2 worker processes: "
                    f"{drained:.0f} deliveries/s (goal >= 100/s)",
                    flush=True,
                )

                # 1: latency at 50/s, with the two worker processes.
                lat = latency(base, auth, items, receiver, args.events, args.rate)
                print(
                    f"1. {lat['events']} movements at {lat['sent_per_s']:.1f}/s, one webhook, "
                    f"2 workers: commit -> receiver p50 {lat['p50_ms']:.0f} ms, "
                    f"p95 {lat['p95_ms']:.0f} ms, max {lat['max_ms']:.0f} ms (goal p95 < 1000 ms)",
                    flush=True,
                )

            # 3: writes with the webhook and its workers on, then off, in alternating rounds.
            machine = Machine(base, url, broker.process.pid if broker.process else 0)
            rounds = write_rounds(args, env, machine, auth, items, receiver, hook["id"])
    on = sum(r["on"] for r in rounds) / len(rounds)
    off = sum(r["off"] for r in rounds) / len(rounds)
    print(
        f"3. POST /items/{{id}}/stock, 8 clients, {args.rounds} x {args.writes} each way"
        f"{', worker on its own CPU' if args.worker_cpu else ''}: webhook+workers on "
        f"{on:.1f}/s, off {off:.1f}/s: {on / off:.2f}x (goal >= 0.9x)"
    )
    for part in CPU_PARTS:
        cpu_on = sum(r[f"cpu_on_{part}"] for r in rounds) / len(rounds)
        cpu_off = sum(r[f"cpu_off_{part}"] for r in rounds) / len(rounds)
        print(f"   CPU ms per write, {part:8}: on {cpu_on:5.2f}, off {cpu_off:5.2f}")


def backlog_left(url: str) -> int:
    """Events not numbered yet and attempts not finished."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events WHERE seq IS NULL)"
            " + (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')"
        ).fetchone()
    return int(row[0]) if row else 0


def write_rounds(
    args: argparse.Namespace,
    env: dict[str, str],
    machine: Machine,
    auth: dict[str, str],
    items: list[int],
    receiver: Receiver,
    hook: int,
) -> list[dict[str, float]]:
    """On: the webhook enabled, the two worker processes running, what is left from
    before delivered first, then the writes timed and their deliveries awaited. Off:
    the webhook disabled and the workers frozen (SIGSTOP: no CPU, their connections
    kept), the outbox still written. The same warm workers serve every round (warmed
    by WARM_UP writes first): a worker started afresh spends its first seconds
    importing, forking its pool and connecting. The CPU that each part used per
    write is read from /proc around each half."""
    base, url = machine.base, machine.url
    database = url.rsplit("/", 1)[1]
    rounds = []
    with workers(env, count=2, concurrency=4) as started:
        # Warm first, unmeasured: the workers are still importing the app and forking
        # their pools when they start (that CPU fell into round 1's "on" half).
        call("PATCH", f"{base}/webhooks/{hook}", {"enabled": True}, headers=auth)
        expected = len(receiver.received) + WARM_UP
        throughput(base, auth, items, WARM_UP)
        receiver.wait_for(lambda got: len(got) >= expected, timeout=300)
        for n in range(args.rounds):
            result: dict[str, float] = {}
            freeze(started, signal.SIGCONT)
            call("PATCH", f"{base}/webhooks/{hook}", {"enabled": True}, headers=auth)
            deadline = time.monotonic() + 300
            while backlog_left(url) and time.monotonic() < deadline:
                time.sleep(0.2)
            if args.worker_cpu:  # again each round: a pool may have opened a session
                machine.place(started)
            received = len(receiver.received)
            cpu = cpu_seconds(database)
            result["on"] = throughput(base, auth, items, args.writes)
            expected = received + args.writes
            receiver.wait_for(lambda got: len(got) >= expected, timeout=300)  # noqa: B023
            result.update(cpu_per_write(cpu, args.writes, "cpu_on_", database))

            call("PATCH", f"{base}/webhooks/{hook}", {"enabled": False}, headers=auth)
            time.sleep(1)  # the sweep and relay of the PATCH's commit done
            freeze(started, signal.SIGSTOP)
            cpu = cpu_seconds(database)
            result["off"] = throughput(base, auth, items, args.writes)
            result.update(cpu_per_write(cpu, args.writes, "cpu_off_", database))
            print(
                f"3. round {n + 1}: on {result['on']:.1f}/s, off {result['off']:.1f}/s, "
                f"{result['on'] / result['off']:.2f}x; CPU ms per write on "
                f"{result['cpu_on_total']:.1f}, off {result['cpu_off_total']:.1f}",
                flush=True,
            )
            rounds.append(result)
        freeze(started, signal.SIGCONT)  # to stop them
    return rounds


def freeze(started: list[Any], how: signal.Signals) -> None:
    """SIGSTOP or SIGCONT to each worker's process group (its pool and its beat)."""
    for worker in started:
        os.killpg(worker.process.pid, how)


class Machine:
    """Where the parts run: gunicorn at ``base``, the database ``url``, the broker."""

    def __init__(self, base: str, url: str, broker_pid: int) -> None:
        self.base, self.url, self.broker_pid = base, url, broker_pid

    def place(self, started: list[Any]) -> None:
        """Two machines sharing a database server, as a deployment whose worker runs
        apart from its web servers: on the last CPU the worker's side (the Celery
        workers, their PostgreSQL sessions, the broker, and this process: the clients
        and the receiver, which stands for the integrator's machine); on the others
        the web side (gunicorn and its sessions). Every process and thread, and so
        every one they fork later; PostgreSQL's own processes stay where they are."""
        cpus = sorted(os.sched_getaffinity(0))
        worker_side, web_side = set(cpus[-1:]), set(cpus[:-1])
        with psycopg.connect(self.url, autocommit=True) as conn:
            sessions: dict[int, str] = dict(
                conn.execute(
                    "SELECT pid, application_name FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                ).fetchall()
            )
        bind = b"127.0.0.1:" + self.base.rsplit(":", 1)[1].encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                command = (entry / "cmdline").read_bytes()
                group = os.getpgid(pid)
            except OSError:
                continue
            session = sessions.get(pid)
            ours = any(group == worker.process.pid for worker in started)
            if ours or pid in (os.getpid(), self.broker_pid) or session == WORKER_SESSIONS:
                target = worker_side
            elif session == WEB_SESSIONS or (b"gunicorn" in command and bind in command):
                target = web_side
            else:
                continue
            for task in (entry / "task").iterdir():
                with contextlib.suppress(OSError):  # gone meanwhile
                    os.sched_setaffinity(int(task.name), target)


if __name__ == "__main__":
    main()
