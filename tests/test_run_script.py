"""``scripts/run`` as a person runs it: the product with DEBUG off (branded pages, static files
from WhiteNoise), and the bundled simulator kept alive with several gateway workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db,
    pytest.mark.skipif(
        not (ROOT / ".venv").exists(), reason="scripts/run needs the checkout's .venv"
    ),
    pytest.mark.skipif(
        not settings.REDIS_URL, reason="several workers need REDIS_URL (CI sets it)"
    ),
]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port, sim_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")},
        "TF_VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": "",
        "PORT": str(port),
        "SIMULATOR_PORT": str(sim_port),
        "WEB_CONCURRENCY": "2",
    }
    log = (tmp_path / "run.log").open("w+b")
    proc = subprocess.Popen(
        ["bash", "scripts/run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"scripts/run did not start:\n{log.read().decode()[-3000:]}")
                time.sleep(0.5)
        yield {"url": url, "sim": f"http://127.0.0.1:{sim_port}", "proc": proc, "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_scripts_run_serves_the_product_with_debug_off_and_keeps_the_simulator(platform):
    url = platform["url"]
    # The simulator is up, with WEB_CONCURRENCY=2 in the environment.
    time.sleep(1)
    assert platform["proc"].poll() is None
    assert httpx.get(f"{platform['sim']}/v1/models", timeout=5).status_code == 200
    # An unknown URL: the branded 404, not Django's debug page with every route.
    missing = httpx.get(f"{url}/no-such-page/")
    assert missing.status_code == 404
    assert 'data-testid="error-page"' in missing.text
    assert "URLconf" not in missing.text and "Django" not in missing.text
    # The API's own 404, in its envelope.
    api = httpx.get(f"{url}/openai/v1/nope")
    assert api.status_code == 404 and api.json()["error"]["message"]
    # Pages and their static files are served (collected, hashed, by WhiteNoise).
    landing = httpx.get(f"{url}/")
    assert landing.status_code == 200
    css = [part.split('"')[0] for part in landing.text.split('href="')[1:] if ".css" in part]
    assert css and all(".css" in c for c in css)
    for href in css:
        assert httpx.get(url + href).status_code == 200, href
    # Sign-up works over plain HTTP (cookies are not Secure-only here).
    with httpx.Client(base_url=url) as client:
        page = client.get("/login/")
        assert page.status_code == 200 and "csrftoken" in client.cookies
