"""A CSV export that fails after its first bytes were sent (§9), under real gunicorn
on PostgreSQL: the client gets a cut chunked transfer (never a complete-looking file),
and the log gets one line with the request id — no traceback, no SQL, no values.

The failure is real: the worker's database session is ended (pg_terminate_backend)
while the client holds the stream back, so the next chunk's statement fails. The
client's receive buffer is small and the export far larger than what the kernel's
buffers hold, so the stream is surely unfinished when the session ends.
"""

from __future__ import annotations

import http.client
import json
import socket

import psycopg
import pytest

from helpers import PG_URL
from servers import SECRET, Server, libpq, migrate, postgres_database, production_env, sign_up

ITEMS = 12_000
DESCRIPTION = 2000  # characters per item: ~24 MB of CSV, far above the socket buffers
REQUEST_ID = "export-cut-1"


class SmallWindow(http.client.HTTPConnection):
    """A connection whose receive buffer is set before connecting (so the kernel
    cannot grow it): the server can run only a little ahead of what we read."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock


@pytest.mark.postgres
def test_an_export_failing_midway_is_cut_and_logged_once() -> None:
    with postgres_database(PG_URL, prefix="stores_cut_") as url:
        env = production_env(
            DATABASE_URL=url,
            JWT_SECRET_KEY=SECRET,
            GUNICORN_HOST="127.0.0.1",
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
            EXPORT_CHUNK_SIZE="100",
        )
        migrate(env)
        server = Server(env, workers=1)
        try:
            server.wait_until_up()
            auth = sign_up(server.url)
            store = server.request("POST", "/stores", {"name": "Big Shop"}, headers=auth).json
            with psycopg.connect(libpq(url), autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO items"
                    " (name, description, price, store_id, stock, created_at, updated_at)"
                    " SELECT 'item ' || n, repeat('x', %s), 1.50, %s, 1, now(), now()"
                    " FROM generate_series(1, %s) AS n",
                    [DESCRIPTION, store["id"], ITEMS],
                )
            stream = SmallWindow("127.0.0.1", server.port, timeout=30)
            stream.request(
                "GET", f"/stores/{store['id']}/items.csv", headers={"X-Request-ID": REQUEST_ID}
            )
            answer = stream.getresponse()
            assert answer.status == 200
            assert answer.headers["Transfer-Encoding"] == "chunked"
            start = answer.read(64 * 1024)
            assert start.startswith(b"id,name,description,")
            # The worker is now blocked writing; its session (open between chunks) ends.
            with psycopg.connect(libpq(url), autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            assert ended, "no session of the worker to end"
            with pytest.raises(http.client.IncompleteRead) as cut:
                answer.read()
            stream.close()
            received = start + cut.value.partial
            assert len(received) < ITEMS * DESCRIPTION  # some rows, never all of them
            assert not received.endswith(b"0\r\n\r\n")

            # The server goes on serving (a fresh connection from the pool).
            assert server.request("GET", "/health").status_code == 200
        finally:
            log = server.log()
            server.stop()
    lines = [line for line in log.splitlines() if REQUEST_ID in line]
    assert len(lines) == 1, log[-4000:]
    [entry] = [json.loads(line) for line in lines]
    assert entry["level"] == "ERROR"
    assert entry["path"] == f"/stores/{store['id']}/items.csv"
    assert entry["status"] == 200
    assert entry["cut"] == "OperationalError"
    assert 0 < entry["rows_sent"] < ITEMS
    for leak in ("Traceback", "SELECT", "xxxxxxxx", "item 1"):
        assert leak not in log, log[-4000:]
