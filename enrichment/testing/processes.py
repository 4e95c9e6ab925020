"""Real processes for fault-injection tests and benchmarks: a private redis-server, Celery
workers and beat, and a gunicorn web server, each on this machine's loopback only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A redis-server of our own on a free port, with nothing kept on disk."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(  # noqa: S603 - a fixed command of ours
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), timeout=10, what="redis-server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        wait_until(lambda: not port_open(self.port), timeout=10, what="redis-server to stop")


class Process:
    """A child process in its own process group (prefork children die with it)."""

    def __init__(self, args: list[str], env: dict, ready=None, log: Path | None = None):
        self.args, self.env, self.ready, self.log = args, env, ready, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> Process:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603 - our own commands
            self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if self.ready:
            wait_until(self.ready, timeout=timeout, what=" ".join(self.args[:4]))
        return self

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=10)


def database_url() -> str:
    """The URL of the database this (test) process uses, for child processes to share it."""
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    host = db["HOST"] or "127.0.0.1"
    if host.startswith("/"):  # a Unix socket folder, such as the embedded server's
        return f"postgres://{auth}@{quote(host, safe='')}/{db['NAME']}"
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


def django_env(*, openai_base_url: str) -> dict:
    """Environment for our web and worker processes: this test's database, the OpenAI stub,
    the test's signing key (so its tokens are accepted); the caller sets the broker
    (REDIS_URL)."""
    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "memoryconnector.settings.local",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "JWT_SIGNING_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": "",
        "AI_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-fault-injection-key",
        "OPENAI_BASE_URL": openai_base_url,
        "OPENAI_TIMEOUT_SECONDS": "120",
        "USER_DAILY_MEMORY_LIMIT": "0",
        "USER_DAILY_ENRICHMENT_LIMIT": "0",
        "ENRICHMENT_BATCH_SIZE": "500",
        "ENRICHMENT_HEARTBEAT_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }


def celery_worker(
    env: dict,
    *,
    name: str,
    concurrency: int = 1,
    log: Path | None = None,
    loglevel: str = "INFO",
    include: tuple[str, ...] = (),
):
    """A worker as the app runs them (every queue of the app, prefork); `name` is its node
    name (`name@host` unless it has an @), `include` extra task modules (`-I`)."""
    hostname = name if "@" in name else f"{name}@%h"
    return Process(
        [sys.executable, "-m", "celery", "-A", "memoryconnector", "worker",
         f"--loglevel={loglevel}", f"--concurrency={concurrency}", "--pool=prefork",
         f"--hostname={hostname}", "--without-mingle", "--without-gossip",
         *(["-I", ",".join(include)] if include else [])],
        env, log=log,
    )  # fmt: skip


def celery_beat(env: dict, *, schedule: Path, log: Path | None = None):
    return Process(
        [sys.executable, "-m", "celery", "-A", "memoryconnector", "beat", "--loglevel=INFO",
         f"--schedule={schedule}"],
        env, log=log,
    )  # fmt: skip


def gunicorn(env: dict, *, port: int, workers: int = 2, log: Path | None = None):
    return Process(
        [sys.executable, "-m", "gunicorn", "memoryconnector.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"],
        env, ready=lambda: port_open(port), log=log,
    )  # fmt: skip


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, check=True,
    )  # fmt: skip
