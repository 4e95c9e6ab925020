"""Staff pages at scale: the stats and cost-tracking endpoints, the dashboard and the cost
ledger's admin changelist, timed with a small and a large history (seeded with COPY), and the
ratio between the two. Aim: 3x or less.

    .venv/bin/python bench/staff_pages.py [--small 10000] [--large 1000000] [--runs 5]

Cost records are twice the memories. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import bench_env, django_setup, write_results

PAGES = [
    ("GET /api/v1/admin/stats", "api", "/api/v1/admin/stats"),
    ("GET /api/v1/admin/ai-cost-tracking", "api", "/api/v1/admin/ai-cost-tracking"),
    ("GET /api/v1/admin/enrichment-worker", "api", "/api/v1/admin/enrichment-worker"),
    ("dashboard", "admin", "/admin/dashboard/"),
    ("AICostRecord changelist", "admin", "/admin/costs/aicostrecord/"),
    ("Memory changelist", "admin", "/admin/memories/memory/"),
]


def time_pages(runs: int) -> dict[str, float | None]:
    from django.test import Client

    from accounts.models import User
    from accounts.services import tokens_for_user

    staff, _ = User.objects.get_or_create(
        email="volume-staff@example.com", defaults={"is_staff": True, "is_superuser": True}
    )
    api = Client(HTTP_AUTHORIZATION=f"Bearer {tokens_for_user(staff)['accessToken']}")
    admin = Client()
    admin.force_login(staff)
    timings: dict[str, float | None] = {}
    for name, kind, url in PAGES:
        client = api if kind == "api" else admin
        if client.get(url).status_code != 200:  # warm-up, and skip pages that don't exist
            timings[name] = None
            continue
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)  # noqa: S101
        timings[name] = statistics.median(samples)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    django_setup(bench_env(DJANGO_ALLOWED_HOSTS="testserver"))
    from django.core.management import call_command

    results = {}
    for label, memories in (("small", args.small), ("large", args.large)):
        started = time.perf_counter()
        call_command(
            "seed_volume", memories=memories, cost_records=2 * memories, truncate=True,
            verbosity=0,
        )  # fmt: skip
        seeded = time.perf_counter() - started
        print(f"{label}: seeded {memories} memories, {2 * memories} cost records in {seeded:.0f} s")
        results[label] = time_pages(args.runs)

    print(f"{'page':<38}{'small ms':>10}{'large ms':>10}{'ratio':>8}")
    rows = []
    for name, _, _ in PAGES:
        small, large = results["small"][name], results["large"][name]
        if small is None or large is None:
            print(f"{name:<38}{'—':>10}{'—':>10}{'—':>8}")
            continue
        ratio = large / small
        rows.append({"page": name, "smallMs": small * 1000, "largeMs": large * 1000,
                     "ratio": round(ratio, 2)})  # fmt: skip
        print(f"{name:<38}{small * 1000:>10.1f}{large * 1000:>10.1f}{ratio:>8.2f}")
    write_results(
        "staff_pages",
        {"smallMemories": args.small, "largeMemories": args.large, "pages": rows},
    )


if __name__ == "__main__":
    main()
