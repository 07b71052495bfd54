#!/bin/sh
# Container start, and a PaaS's process commands. The first argument names the process:
#   web (the default)  check the configuration and wait for the database (prestart.py),
#                      migrate, then become gunicorn
#   worker             the same checks and migration, then become a Celery worker
#                      (events, webhooks, jobs)
#   beat               become Celery beat, the clock of periodic work (one per deployment)
# `exec` makes the server this process, so the SIGTERM of `docker stop` or a deploy
# reaches it directly: gunicorn lets requests in flight finish, a worker its tasks.
set -eu

process="${1:-web}"
case "$process" in
    web|worker|beat)
        if [ "$#" -gt 0 ]; then shift; fi
        ;;
    *)
        # Any other command (`docker run IMAGE flask create-admin ...`, a PaaS's release
        # step `flask db upgrade`): run just that command instead of a server.
        exec "$@"
        ;;
esac

if [ "$process" = beat ]; then
    # Its schedule file in /tmp: the image's own files are read-only in production.
    exec celery -A app beat --loglevel="${LOG_LEVEL:-INFO}" \
        --schedule /tmp/celerybeat-schedule "$@"
fi

python -m prestart
# Safe with several replicas starting at once: migrations/env.py takes a lock.
flask --app app db upgrade
if [ "$process" = worker ]; then
    exec celery -A app worker --loglevel="${LOG_LEVEL:-INFO}" "$@"
fi
exec gunicorn -c gunicorn.conf.py "app:create_app()"
