#!/usr/bin/env bash
# Local development runner, used by `make run`.
#
# Migrate, ensure the demo user, start a Celery worker and beat in the background, and run
# the Django dev server in the foreground. The broker is REDIS_URL (or CELERY_BROKER_URL)
# when set, else kombu's filesystem transport under var/broker (no server needed).
# Anything started with start_bg is stopped when this script exits (Ctrl-C, server crash,
# or normal exit) by the EXIT trap below; so the server runs as a child, not exec'd.
set -euo pipefail

cd "$(dirname "$0")/.."

PY=.venv/bin/python
ADDR="${RUNSERVER_ADDR:-127.0.0.1:8000}"

BG_PIDS=()

start_bg() {
    "$@" &
    BG_PIDS+=("$!")
    echo "run-local: started $1 (pid $!)"
}

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BG_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$PY" manage.py migrate --noinput
"$PY" manage.py ensure_demo_user

mkdir -p var/broker var/broker-processed var/broker-control
start_bg .venv/bin/celery -A memoryconnector worker --loglevel=INFO \
    --concurrency="${CELERY_CONCURRENCY:-2}" --hostname="local-worker@%h"
start_bg .venv/bin/celery -A memoryconnector beat --loglevel=INFO \
    --schedule=var/celerybeat-schedule

"$PY" manage.py runserver "$ADDR"
