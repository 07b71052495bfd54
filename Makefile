# Two commands: `make run` serves the API on SQLite; `make test` lints and tests it.
# Both create .venv and install what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
PYTEST_ARGS ?=

export FLASK_APP := app

.PHONY: run worker beat serve test test-image lint format migrate bench bench-scale bench-soak bench-observability bench-events bench-import clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.runtime
	$(BIN)/flask db upgrade

# The dev server with a Celery worker (and its beat) beside it: without REDIS_URL the
# broker is a folder under instance/, so events, webhooks and jobs work with no server.
# The worker runs in a session of its own (setsid, where there is one): a signal to
# the whole group (Ctrl-C, an IDE's stop) reaches it only through the trap, once, and
# it stops its pool itself (a pool signalled directly could leave it hung on exit).
run: migrate
	$$(command -v setsid) $(BIN)/celery -A app worker --beat --loglevel=INFO --concurrency=2 & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	$(BIN)/flask run --host $(HOST) --port $(PORT)

# The worker and the scheduler of periodic work, each as its own process (production).
worker: migrate
	$(BIN)/celery -A app worker --loglevel=INFO

beat: $(VENV)/.runtime
	$(BIN)/celery -A app beat --loglevel=INFO

serve: migrate
	PORT=$(PORT) GUNICORN_HOST=$(HOST) $(BIN)/gunicorn -c gunicorn.conf.py "app:create_app()"

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: lint
	$(BIN)/pytest --cov --cov-report=term --durations=15 $(PYTEST_ARGS)

# The image built and run with podman, alone (tests/system/test_image.py). As root, with
# TEST_DATABASE_URL and REDIS_URL set as for `make test`.
test-image: $(VENV)/.dev
	$(BIN)/pytest -m image $(PYTEST_ARGS)

# Times GET /items over 10,000 items through gunicorn (BENCH_ARGS: --database-url, --requests).
bench: $(VENV)/.dev
	$(BIN)/python bench/list_items.py $(BENCH_ARGS)

# 1,000,000 items on PostgreSQL: p50/p95, SQL and plans per request, a cursor walk, wrk
# throughput beside a minimal Flask app, a big store's delete (needs wrk; BENCH_SCALE_URL
# names a database to create and drop on your server).
BENCH_SCALE_URL ?= postgresql://postgres@127.0.0.1:5432/bench_scale
bench-scale: $(VENV)/.dev
	$(BIN)/python bench/scale.py --database-url $(BENCH_SCALE_URL) $(BENCH_ARGS)

# The soak (docs/performance.md): two gunicorns, a Celery worker and a webhook receiver
# under 64 connections of mixed reads and writes for SOAK_MINUTES (30 by default); the
# plot and table go to docs/. Needs wrk, PostgreSQL and Redis (BENCH_SOAK_URL names a
# database to create and drop; REDIS_URL the Redis).
BENCH_SOAK_URL ?= postgresql://postgres@127.0.0.1:5432/bench_soak
SOAK_MINUTES ?= 30
bench-soak: $(VENV)/.dev
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python bench/soak.py --database-url $(BENCH_SOAK_URL) $(BENCH_ARGS)

# What metrics, traces and the new logs cost GET /items/{id}: wrk against the build
# before them, this one with them on, and with them off (docs/performance.md).
BENCH_OBS_URL ?= postgresql://postgres@127.0.0.1:5432/bench_observability
bench-observability: $(VENV)/.dev
	$(BIN)/python bench/observability_cost.py --database-url $(BENCH_OBS_URL) $(BENCH_ARGS)
# Events and webhooks on PostgreSQL with a private redis-server as broker and two Celery
# workers: commit-to-receiver p50/p95 at 50 movements/s, deliveries/s, write cost in
# alternating on/off rounds with each part's CPU (BENCH_ARGS: --rounds N; --worker-cpu
# gives the workers the last CPU and gunicorn the others).
BENCH_EVENTS_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
bench-events: $(VENV)/.dev
	$(BIN)/python bench/events.py --database-url $(BENCH_EVENTS_URL) $(BENCH_ARGS)

# The CSV import job on PostgreSQL: 100,000 then 1,000,000 new rows (then the same file
# again), rows/s and the time of each phase (BENCH_IMPORT_URL names a database to create
# and drop; BENCH_ARGS: --rows N, repeatable).
BENCH_IMPORT_URL ?= postgresql://postgres@127.0.0.1:5432/bench_import
bench-import: $(VENV)/.dev
	$(BIN)/python bench/import_copy.py --database-url $(BENCH_IMPORT_URL) $(BENCH_ARGS)

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage htmlcov
