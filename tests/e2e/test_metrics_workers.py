"""``manage.py serve --workers 2``: /metrics adds up what both worker processes observed, whichever
worker answers the scrape, and a previous run's values are cleared when the server starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import free_port
from tests.e2e.test_metrics import scrape, value

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (CI sets it)"),
]
ROOT = Path(__file__).resolve().parents[2]
LABELS = {"surface": "openai", "model": "sim-gpt", "provider": "sim-openai", "status": "200"}
# What a previous run left in the directory: 1,000 requests the new run must not report.
STALE = """
from prometheus_client import Counter
Counter("tokenfactory_requests", "", ["surface", "model", "provider", "status"]).labels(
    "openai", "sim-gpt", "sim-openai", "200"
).inc(1000)
"""


@pytest.fixture
def two_workers(live: dict[str, Any], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if connection.vendor != "postgresql":
        pytest.skip("worker processes need a database they can share: PostgreSQL (CI sets it)")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    subprocess.run([sys.executable, "-c", STALE], env=env, check=True)
    assert list(metrics_dir.glob("counter_*.db"))

    db = settings.DATABASES["default"]
    host, port_db = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    user = f"{db['USER']}:{db['PASSWORD'] or ''}"
    env["DATABASE_URL"] = f"postgres://{user}@{host}:{port_db}/{db['NAME']}"
    env["REDIS_URL"] = settings.REDIS_URL
    env["DEBUG"] = "true"
    port = free_port()
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", "2", "--log-level", "warning"], cwd=ROOT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the two-worker gateway did not start")
    yield url, metrics_dir
    proc.terminate()
    proc.wait(timeout=20)


def _pids(metrics_dir: Path) -> set[str]:
    return {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}


def test_it_adds_up_the_metrics_of_every_worker(live, two_workers) -> None:
    url, metrics_dir = two_workers
    assert value(scrape(url), "tokenfactory_requests_total", **LABELS) == 0  # the stale run's gone

    # A new connection per request, eight at a time: whichever worker is idle accepts the next one.
    # The second worker may still be starting (loading Django and the tokenizer) when the first
    # answers /healthz, so this goes on until both have served, not for a fixed count.
    http = openai.DefaultHttpxClient(limits=httpx.Limits(max_keepalive_connections=0))
    client = openai.OpenAI(
        base_url=f"{url}/openai/v1", api_key=live["secret"], max_retries=0, http_client=http
    )

    def one(n: int) -> None:
        stream = n % 2 == 1
        answer = client.chat.completions.create(
            model="sim-gpt",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            stream=stream,
        )
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)

    sent = 0
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(max_workers=8) as pool:
        while sent < 8 or (len(_pids(metrics_dir)) < 2 and time.monotonic() < deadline):
            list(pool.map(one, range(sent, sent + 8)))
            sent += 8
    assert len(_pids(metrics_dir)) == 2, "both workers served requests"

    for _ in range(6):  # each scrape, on a new connection, may reach either worker
        samples = scrape(url)
        assert value(samples, "tokenfactory_requests_total", **LABELS) == sent
        assert value(samples, "tokenfactory_request_duration_seconds_count", **LABELS) == sent
        assert value(samples, "tokenfactory_time_to_first_token_seconds_count", **LABELS) == sent
        admitted = {"decision": "admit", "reason": ""}
        assert value(samples, "tokenfactory_limiter_decisions_total", **admitted) == sent
