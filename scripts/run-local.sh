#!/usr/bin/env bash
# Local development runner, used by `make run`.
#
# Today: migrate, ensure the demo user, run the Django dev server in the foreground.
# A later change adds the Celery worker and beat here, e.g.
#     start_bg .venv/bin/celery -A memoryconnector worker --loglevel=info
#     start_bg .venv/bin/celery -A memoryconnector beat --loglevel=info
# before the server starts. Anything started with start_bg is stopped when this
# script exits (Ctrl-C, server crash, or normal exit) by the EXIT trap below.
# For that reason the server is run as a child, not exec'd: exec would drop the trap.
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

# (Celery worker and beat: start_bg ... here, see the header.)

"$PY" manage.py runserver "$ADDR"
