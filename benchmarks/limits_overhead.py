"""What limits and metering add to one request: admission plus settlement, timed in a loop.

    .venv/bin/python benchmarks/limits_overhead.py [--redis redis://127.0.0.1:6379/9] [-n 5000]

Runs against a throwaway SQLite database under a temporary TF_VAR_DIR: a Token Pro key (RPM,
TPM and a 5-hour window all checked), `admit` then `settle` per request, exactly as the gateway
calls them. With --redis that is the two Lua script calls (one round trip each, the settlement
also queueing the usage record on the metering stream); without, the in-process limiter.
Prints p50/p99 in microseconds for the pair.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="", help="REDIS_URL (default: in-process limits)")
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="tf-limits-bench-")
    os.environ["TF_VAR_DIR"] = tmp
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ["LOG_LEVEL"] = "ERROR"
    if args.redis:
        os.environ["REDIS_URL"] = args.redis
    else:
        os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("bootstrap", "--no-migrate", verbosity=0)

    from accounts import keys
    from accounts.models import Account
    from billing import plans
    from gateway import auth, catalog, limits, metering

    account = Account.objects.create(name="bench", plan=plans.by_name("Token Pro"))
    issued = keys.issue(account=account, name="bench", rpm_limit=None, tpm_limit=None)

    async def run() -> list[float]:
        caller = await auth.authenticate(issued.secret)
        assert caller is not None
        snap = await catalog.snapshot()
        model = snap.models["gpt-4o"]
        timings = []
        for i in range(args.n):
            started = time.perf_counter()
            admission = await limits.admit(
                caller, model, input_tokens=20, max_output_tokens=50, request_id=f"req_b{i}"
            )
            await limits.settle(
                admission,
                tokens=40,
                billed_micros=0,
                record=metering.UsageRecord(
                    request_id=f"req_b{i}",
                    account_id=account.pk,
                    key_id=caller.key_id,
                    surface="openai",
                    model="gpt-4o",
                    status=200,
                    input_tokens=20,
                    output_tokens=20,
                    created_at_ms=int(time.time() * 1000),
                ),
            )
            timings.append(time.perf_counter() - started)
        return timings

    # Every check runs (RPM, TPM, window) but none refuses during the loop.
    plan = account.plan
    plan.rpm_limit = 10**9
    plan.tpm_limit = 10**12
    plan.window_tokens = 10**12
    plan.save()
    auth.clear()
    timings = asyncio.run(run())
    metering.discard_local()
    timings.sort()
    us = [t * 1e6 for t in timings]
    print(
        f"limits={'redis' if args.redis else 'in-process'} n={len(us)} "
        f"p50={statistics.median(us):.0f}us p99={us[int(len(us) * 0.99) - 1]:.0f}us "
        f"mean={statistics.fmean(us):.0f}us"
    )
    if args.redis:
        import redis

        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter("tf:*"):
            client.delete(key)


if __name__ == "__main__":
    main()
