#!/bin/sh
# Container start, and a PaaS's web command: check the configuration and wait for
# the database (prestart.py), migrate, then become gunicorn. `exec` makes gunicorn
# this process, so the SIGTERM of `docker stop` or a deploy reaches it directly and
# requests in flight get GUNICORN_GRACEFUL_TIMEOUT seconds to finish.
set -eu

# Given a command (`docker run IMAGE flask create-admin ...`, a PaaS's release step
# `flask db upgrade`), run just that command instead of the server.
if [ "$#" -gt 0 ]; then
    exec "$@"
fi

python -m prestart
# Safe with several replicas starting at once: migrations/env.py takes a lock.
flask --app app db upgrade
exec gunicorn -c gunicorn.conf.py "app:create_app()"
