"""Two gateway processes sharing one Redis and one PostgreSQL enforce one limit, and see a
revocation at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts import keys
from gateway import metering
from tests import factories
from tests.conftest import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (CI sets it)"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def second_gateway(live: dict[str, Any]) -> Iterator[str]:
    if connection.vendor != "postgresql":
        pytest.skip("a second process needs a database it can share: PostgreSQL (CI sets it)")
    db = settings.DATABASES["default"]
    port = free_port()
    env = dict(os.environ)
    host, port_db = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    user = f"{db['USER']}:{db['PASSWORD'] or ''}"
    env["DATABASE_URL"] = f"postgres://{user}@{host}:{port_db}/{db['NAME']}"
    env["REDIS_URL"] = settings.REDIS_URL
    env["DEBUG"] = "true"
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/openai/v1/models", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the second gateway did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _chat(url: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{url}/openai/v1/chat/completions",
        json={"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )


def test_it_enforces_one_rpm_limit_across_two_processes(live, second_gateway):
    acct = factories.account(plan_slug="enterprise")
    _, secret = factories.api_key(acct, rpm_limit=None)
    key = acct.api_keys.get()
    key.rpm_limit = 10
    key.save(update_fields=["rpm_limit"])
    now = time.time()
    if now % 60 > 50:
        time.sleep(61 - now % 60)
    statuses = [
        _chat(url, secret).status_code for _ in range(8) for url in (live["url"], second_gateway)
    ]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 6


def test_it_revokes_a_key_on_every_process_at_once(live, second_gateway):
    acct = factories.account(plan_slug="enterprise")
    key, secret = factories.api_key(acct)
    assert _chat(live["url"], secret).status_code == 200
    assert _chat(second_gateway, secret).status_code == 200
    keys.revoke(key=key)
    assert _chat(live["url"], secret).status_code == 401
    assert _chat(second_gateway, secret).status_code == 401


def test_two_processes_admit_a_hundred_concurrent_first_requests_of_a_new_account(
    live, second_gateway
):
    """Nobody has the account's window or balance in Redis yet (a new account, then again after
    they are deleted, as a Redis restart does): each process loads them from the database and
    its admission sets them atomically. Four separate HSETNX calls once let a concurrent
    admission see a window's start without its end and answer 503 (11 of 100; 77 after a
    FLUSHDB)."""
    import redis

    from billing.models import Plan

    Plan.objects.filter(slug="test").update(
        window_tokens=200,
        tpm_limit=None,
        account_tpm_limit=None,
        rpm_limit=None,
        account_rpm_limit=None,
    )
    acct = factories.account(plan_slug="test", balance_micros=10**12)
    _, secret = factories.api_key(acct)
    urls = (live["url"], second_gateway)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30) as c:

            async def one(i: int) -> int:
                await asyncio.sleep(0.003 * i)
                response = await c.post(
                    f"{urls[i % 2]}/openai/v1/chat/completions",
                    json={"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {secret}"},
                )
                return response.status_code

            return await asyncio.gather(*[one(i) for i in range(100)])

    for _ in range(2):
        statuses = asyncio.run(burst())
        assert statuses == [200] * 100, {s: statuses.count(s) for s in set(statuses)}
        # The drain persists the window (its start and tokens used): what the next load finds.
        metering.drain()
        redis.Redis.from_url(settings.REDIS_URL).delete(f"tf:win:{acct.pk}", f"tf:bal:{acct.pk}")


def test_usage_refuses_a_key_revoked_on_another_process_at_once(live, second_gateway):
    """Issue #16: /v1/usage skipped the key-change check, so another process accepted a revoked
    key there for up to its key cache's lifetime."""
    acct = factories.account(plan_slug="enterprise")
    key, secret = factories.api_key(acct)
    headers = {"authorization": f"Bearer {secret}"}
    assert httpx.get(f"{second_gateway}/v1/usage", headers=headers, timeout=10).status_code == 200
    keys.revoke(key=key)
    refused = httpx.get(f"{second_gateway}/v1/usage", headers=headers, timeout=10)
    assert refused.status_code == 401


# --- issue #16 item 4: prompts that tokenize densely cannot overdraw anything ------------------
#
# The simulator counts one token per UTF-8 byte here (knob tokenizer=bytes, set on the route): the
# densest any real tokenizer counts. Reserving input as body bytes / 4 let 60 such requests drive
# a $0.30 balance to -$0.125; the window and the TPM minute overran the same way.

DENSE_KINDS = ("digits", "cjk", "random")


def _dense_prompt(kind: str, seed: int, size: int = 1500) -> str:
    import random
    import string

    rng = random.Random(seed)
    if kind == "digits":
        return "".join(rng.choice(string.digits) for _ in range(size))
    if kind == "cjk":
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(size // 3))
    return "".join(rng.choice(string.ascii_letters + string.digits + string.punctuation + " ")
                   for _ in range(size))  # fmt: skip


def _dense_model(live: dict[str, Any]) -> str:
    factories.model(
        "dense-gpt",
        routes=[(live["openai"], "sim-gpt+tokenizer=bytes")],
        input_price_micros=10_000_000,  # 10 micro-dollars a token
        output_price_micros=10_000_000,
    )
    return "dense-gpt"


def _dense_burst(urls: tuple[str, ...], secret: str, model: str, count: int = 72) -> list[int]:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=count), timeout=60) as c:

            async def one(i: int) -> int:
                prompt = _dense_prompt(DENSE_KINDS[i % 3], seed=i)
                response = await c.post(
                    f"{urls[i % 2]}/openai/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": 20,
                    },
                    headers={"authorization": f"Bearer {secret}"},
                )
                return response.status_code

            return await asyncio.gather(*[one(i) for i in range(count)])

    return asyncio.run(burst())


def _served(acct_id: int, model: str, expected_records: int) -> list[Any]:
    from gateway.models import UsageRecord

    deadline = time.monotonic() + 30
    while True:
        metering.drain()
        rows = list(UsageRecord.objects.filter(account_id=acct_id, model=model))
        if len(rows) >= expected_records or time.monotonic() > deadline:
            return [row for row in rows if row.status == 200]
        time.sleep(0.2)


def _test_plan(**fields: Any) -> None:
    from billing.models import Plan

    values: dict[str, Any] = {
        "rpm_limit": None,
        "tpm_limit": None,
        "account_rpm_limit": None,
        "account_tpm_limit": None,
        "max_keys": None,
        "window_tokens": None,
    }
    values.update(fields)
    Plan.objects.filter(slug="test").update(**values)


def test_dense_prompts_on_two_processes_never_overdraw_the_balance_by_more_than_one_request(
    live, second_gateway
):
    from accounts.models import Account

    _test_plan(window_tokens=1)  # the window holds nothing: the balance pays for every request
    model = _dense_model(live)
    start = 300_000  # $0.30; one request costs about $0.015
    acct = factories.account(plan_slug="test", balance_micros=start)
    _, secret = factories.api_key(acct)

    statuses = _dense_burst((live["url"], second_gateway), secret, model)

    assert set(statuses) <= {200, 402}, {s: statuses.count(s) for s in set(statuses)}
    assert 0 < statuses.count(200) < len(statuses)  # the balance ran out part way
    served = _served(acct.pk, model, expected_records=len(statuses))
    assert len(served) == statuses.count(200)
    assert all(row.input_tokens >= 1500 and not row.is_estimate for row in served)
    billed = [row.billed_micros for row in served]
    end = Account.objects.get(pk=acct.pk).balance_micros
    assert start - end == sum(billed)  # exact: every request billed once, nothing else
    # The invariant: never below zero by more than one request's cost (only the request that
    # took all that was left can overrun it).
    assert end >= -max(billed), (end, sorted(billed))


def test_dense_prompts_on_two_processes_never_overrun_the_window_by_more_than_one_request(
    live, second_gateway
):
    import redis

    _test_plan(window_tokens=20_000)
    model = _dense_model(live)
    acct = factories.account(plan_slug="test", balance_micros=0)
    _, secret = factories.api_key(acct)

    statuses = _dense_burst((live["url"], second_gateway), secret, model)

    assert set(statuses) <= {200, 429}, {s: statuses.count(s) for s in set(statuses)}
    assert 0 < statuses.count(200) < len(statuses)
    served = _served(acct.pk, model, expected_records=len(statuses))
    used = [row.input_tokens + row.output_tokens for row in served]
    window = redis.Redis.from_url(settings.REDIS_URL).hgetall(f"tf:win:{acct.pk}")
    assert int(window[b"used"]) == sum(used) and int(window[b"reserved"]) == 0
    assert sum(used) <= 20_000 + max(used), (sum(used), sorted(used))


def test_dense_prompts_on_two_processes_never_overrun_tpm_by_more_than_one_request(
    live, second_gateway
):
    _test_plan(tpm_limit=20_000)
    model = _dense_model(live)
    acct = factories.account(plan_slug="test", balance_micros=10**9)
    _, secret = factories.api_key(acct)
    if time.time() % 60 > 35:  # one burst, one minute
        time.sleep(61 - time.time() % 60)

    statuses = _dense_burst((live["url"], second_gateway), secret, model)

    assert set(statuses) <= {200, 429}, {s: statuses.count(s) for s in set(statuses)}
    assert 0 < statuses.count(200) < len(statuses)
    served = _served(acct.pk, model, expected_records=len(statuses))
    used = [row.input_tokens + row.output_tokens for row in served]
    assert sum(used) <= 20_000 + max(used), (sum(used), sorted(used))
