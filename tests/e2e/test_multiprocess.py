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
