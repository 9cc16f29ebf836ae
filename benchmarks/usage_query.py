"""How fast /v1/usage answers for an account with a million usage records, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tokenfactory \\
        .venv/bin/python benchmarks/usage_query.py [--records 1000000] [--runs 20] [--tail 20000]

It migrates the database, gives a throwaway account ("usage-benchmark") a million records spread
over this month with COPY, runs the rollups, then times GET /v1/usage in-process (key check,
query, JSON) for period=month grouped by model and by day: with everything rolled up, and again
with a tail of records the rollups have not reached yet. It prints the median (p50) and p95 of
each case; the README quotes the p50s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils.timezone import now  # noqa: E402

from accounts import keys  # noqa: E402
from accounts.models import Account  # noqa: E402
from billing import plans  # noqa: E402
from billing.models import Plan  # noqa: E402
from gateway import usage  # noqa: E402
from gateway.models import UsageRecord, UsageRollup  # noqa: E402

NAME = "usage-benchmark"
MODELS = [f"bench-model-{n}" for n in range(12)]
COLUMNS = (
    "request_id",
    "account_id",
    "api_key_id",
    "surface",
    "endpoint",
    "model",
    "route",
    "status",
    "error_code",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "is_estimate",
    "cost_micros",
    "billed_micros",
    "in_window",
    "latency_ms",
    "stream",
    "batch_id",
    "created_at",
)


def fresh_account() -> tuple[Account, list[int], str]:
    plans.seed()
    Account.objects.filter(name=NAME).delete()
    acct = Account.objects.create(name=NAME, plan=Plan.objects.get(slug="enterprise"))
    issued = [keys.issue(account=acct, name=f"bench-{n}") for n in range(5)]
    return acct, [i.key.pk for i in issued], issued[0].secret


def insert(acct: Account, key_ids: list[int], count: int, start: datetime, end: datetime) -> float:
    rng = random.Random(count)
    span = max(1.0, (end - start).total_seconds())
    began = time.perf_counter()
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
    ):
        for n in range(count):
            status = 200 if rng.random() > 0.03 else rng.choice([400, 429, 502])
            input_tokens = rng.randint(10, 8_000)
            output_tokens = rng.randint(0, 2_000) if status == 200 else 0
            copy.write_row(
                (
                    uuid.uuid4().hex,
                    acct.pk,
                    rng.choice(key_ids),
                    rng.choice(("openai", "anthropic")),
                    "chat",
                    rng.choice(MODELS),
                    "",
                    status,
                    "",
                    input_tokens,
                    output_tokens,
                    rng.randint(0, input_tokens // 4),
                    0,
                    False,
                    input_tokens + 2 * output_tokens,
                    0,
                    True,
                    rng.randint(50, 3_000),
                    False,
                    "",
                    # In time order, as the gateway writes them (ids follow time).
                    start + timedelta(seconds=span * n / count),
                )
            )
    return time.perf_counter() - began


def timed(secret: str, runs: int, **params: str) -> list[float]:
    client = Client()
    times = []
    for _ in range(runs + 2):
        began = time.perf_counter()
        response = client.get("/v1/usage", params, HTTP_AUTHORIZATION=f"Bearer {secret}")
        elapsed = (time.perf_counter() - began) * 1000
        assert response.status_code == 200, response.content
        times.append(elapsed)
    return times[2:]  # the first two warm the key cache and the connection


def report(label: str, times: list[float]) -> None:
    p95 = statistics.quantiles(times, n=20)[18] if len(times) >= 20 else max(times)
    print(f"  {label:<40} p50 {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tail", type=int, default=20_000, help="records left unrolled")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database: the figure is for PostgreSQL.")

    call_command("migrate", verbosity=0)
    acct, key_ids, secret = fresh_account()
    at = now().astimezone(UTC)
    month = usage.period_range("month", at=at)
    print(f"{args.records:,} usage records for one account, {month.start:%Y-%m-%d} to now")
    seconds = insert(acct, key_ids, args.records, month.start, at)
    print(f"  inserted with COPY in {seconds:.1f} s")
    began = time.perf_counter()
    rolled = usage.roll_up()
    print(f"  rolled up {rolled:,} records in {time.perf_counter() - began:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE gateway_usagerecord")
        cursor.execute("ANALYZE gateway_usagerollup")
    rows = UsageRollup.objects.filter(account=acct).count()
    print(f"  {rows:,} rollup rows (hourly and daily)")

    print(f"GET /v1/usage, {args.runs} runs each, everything rolled up:")
    cases = [
        ("period=month", {"period": "month"}),
        ("period=month&group_by=model", {"period": "month", "group_by": "model"}),
        ("period=month&group_by=day", {"period": "month", "group_by": "day"}),
        ("period=month&group_by=model,day", {"period": "month", "group_by": "model,day"}),
        (
            "period=month&group_by=model,key,day,surface",
            {"period": "month", "group_by": "model,key,day,surface"},
        ),
    ]
    for label, params in cases:
        report(label, timed(secret, args.runs, **params))

    insert(acct, key_ids, args.tail, max(month.start, at - timedelta(hours=1)), at)
    print(f"GET /v1/usage with {args.tail:,} records not rolled up yet:")
    for label, params in cases[1:3]:
        report(label, timed(secret, args.runs, **params))
    began = time.perf_counter()
    usage.roll_up()
    print(f"  rolling up those {args.tail:,} took {time.perf_counter() - began:.2f} s")

    Account.objects.filter(pk=acct.pk).delete()


if __name__ == "__main__":
    main()
