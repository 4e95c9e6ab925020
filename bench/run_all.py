"""`make bench`: every benchmark in turn, each printing its table and writing
bench/results/<name>.json. Needs PostgreSQL and Redis (see bench/harness.py for the URLs).

    .venv/bin/python bench/run_all.py [NAME ...]   # only these (e.g. pipeline ingest)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS = [
    ["ingest.py"],
    # The no-op floor, 1,000 memories with 1 and 2 worker processes, steady 8/s for 15 s.
    ["pipeline.py", "--procs", "1,2", "--memories", "1000", "--steady-rate", "8"],
    ["budget_contention.py"],
    ["staff_pages.py"],
    ["sync.py"],
    ["search.py"],
]


def main(names: list[str]) -> int:
    unknown = set(names) - {run[0].removesuffix(".py") for run in RUNS}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    failed = 0
    for run in RUNS:
        if names and run[0].removesuffix(".py") not in names:
            continue
        print(f"\n=== bench/{' '.join(run)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / run[0]), *run[1:]])  # noqa: S603
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
