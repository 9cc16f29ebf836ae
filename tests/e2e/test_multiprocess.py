"""Two gateway processes sharing one Redis and one PostgreSQL enforce one limit, and see a
revocation at once."""

from __future__ import annotations

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
