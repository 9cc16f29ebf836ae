"""What every browser test shares: Debian's Chromium, launched as this machine allows, and a way
to reach the database from a Playwright test."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
# Headless as root, and nothing that reaches out to the network (it is closed here).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def skip_without_chromium() -> None:
    """Call at module level: skip where Chromium is missing, except in CI, where it must fail."""
    if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
        pytest.skip(
            f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True
        )


def orm(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a database call off this thread: Playwright's sync API keeps an event loop running
    here, and Django refuses ORM calls from a thread with a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def serves_static(base_url: str, path: str = "js/app.js") -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}{settings.STATIC_URL}{path}", timeout=5):
            return True
    except urllib.error.URLError:
        return False
