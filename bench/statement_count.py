"""Counts the SQL statements, transactions and new database connections of a process, for the
pipeline benchmark's per-job figures.

In Celery workers: loaded with `celery ... worker -I bench.statement_count`, it does nothing
unless the environment variable BENCH_STATEMENT_COUNT holds a Redis URL. Then each pool process
installs the counter when it starts (`worker_process_init`), and after every task that counted
something (and at the process's exit) adds its counts to the Redis hash `KEY` with HINCRBY, so
the benchmark reads the sum over all processes once the queue is drained.

In the benchmark's own process: `install()`, then `snapshot()`.

What is counted:
- statements: every statement sent through Django's cursors (an `executemany` counts once),
  savepoints included; the driver's own connection set-up is not;
- transactions: each COMMIT or ROLLBACK of a transaction that ran a statement (Django's
  `atomic`), plus each statement run in autocommit mode outside `atomic` (PostgreSQL runs it as
  a transaction of its own) — the two parts are also kept apart (`commits`, `rollbacks`,
  `autocommit_statements`);
- sql_<first word>: the statements by kind (sql_select, sql_insert, sql_savepoint, ...);
- connections: each new database connection (Django's `connection_created`), in any thread;
- tasks: Celery tasks run, except the benchmark's own (`bench.*`).
"""

from __future__ import annotations

import os
import threading

from celery.signals import task_postrun, worker_process_init, worker_process_shutdown

KEY = "bench:statement_count"
ENV = "BENCH_STATEMENT_COUNT"
# Always reported (0 when nothing was counted); sql_<kind> fields only when seen.
FIELDS = (
    "statements", "transactions", "commits", "rollbacks", "autocommit_statements",
    "connections", "tasks",
)  # fmt: skip

_lock = threading.Lock()
_counts: dict[str, int] = {}
_installed = False
_redis = None


def _add(field: str, n: int = 1) -> None:
    with _lock:
        _counts[field] = _counts.get(field, 0) + n


def _count_statement(execute, sql, params, many, context):
    connection = context["connection"]
    _add("statements")
    _add("sql_" + (sql.split(None, 1)[0].lower() if sql.strip() else "empty"))
    if connection.autocommit:
        _add("transactions")
        _add("autocommit_statements")
    else:
        # Inside `atomic`: the transaction is counted once, when it commits or rolls back.
        connection._bench_transaction_open = True
    return execute(sql, params, many, context)


def _counting_end(method, field: str):
    def end(self, *args, **kwargs):
        if getattr(self, "_bench_transaction_open", False):
            self._bench_transaction_open = False
            _add("transactions")
            _add(field)
        return method(self, *args, **kwargs)

    return end


def _on_connection_created(sender, connection, **kwargs) -> None:
    _add("connections")
    if _count_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_statement)


def install() -> None:
    """Count from now on, in every thread's connections of this process."""
    global _installed
    if _installed:
        return
    from django.db import connections
    from django.db.backends.signals import connection_created

    wrapper_class = type(connections["default"])
    wrapper_class.commit = _counting_end(wrapper_class.commit, "commits")
    wrapper_class.rollback = _counting_end(wrapper_class.rollback, "rollbacks")
    connection_created.connect(_on_connection_created, dispatch_uid="bench.statement_count")
    # This thread's connection may already be open (then connection_created has been sent).
    connection = connections["default"]
    if _count_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_statement)
    _installed = True


def snapshot(*, reset: bool = False) -> dict[str, int]:
    """This process's counts so far."""
    with _lock:
        counts = dict(_counts)
        if reset:
            _counts.clear()
    return counts


def _flush() -> None:
    global _redis
    counts = snapshot(reset=True)
    if not counts:
        return
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(os.environ[ENV])
    pipe = _redis.pipeline(transaction=False)
    for field, n in counts.items():
        pipe.hincrby(KEY, field, n)
    pipe.execute()


@worker_process_init.connect(dispatch_uid="bench.statement_count.init")
def _on_process_init(**kwargs) -> None:
    if os.environ.get(ENV):
        install()


@task_postrun.connect(dispatch_uid="bench.statement_count.task")
def _on_task_postrun(sender=None, **kwargs) -> None:
    if not _installed:
        return
    if sender is not None and not sender.name.startswith("bench."):
        _add("tasks")
    _flush()


@worker_process_shutdown.connect(dispatch_uid="bench.statement_count.shutdown")
def _on_process_shutdown(**kwargs) -> None:
    if _installed:
        _flush()
