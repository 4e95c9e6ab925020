"""`make bench`: every benchmark in turn, each printing its table and writing
bench/results/<name>.json. Needs PostgreSQL and Redis (see bench/harness.py for the URLs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS = [
    ["ingest.py"],
    ["pipeline.py", "--memories", "2000", "--workers", "1,2,4"],
    ["pipeline.py", "--memories", "300", "--rate", "8", "--output", "pipeline-steady"],
    ["budget_contention.py"],
    ["staff_pages.py"],
    ["sync.py"],
    ["search.py"],
]


def main() -> int:
    failed = 0
    for run in RUNS:
        print(f"\n=== bench/{' '.join(run)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / run[0]), *run[1:]])  # noqa: S603
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
