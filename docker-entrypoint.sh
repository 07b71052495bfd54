#!/bin/sh
# Container start: migrate the database, then hand the process over to gunicorn.
set -eu

flask --app app db upgrade
exec gunicorn -c gunicorn.conf.py "app:create_app()"
