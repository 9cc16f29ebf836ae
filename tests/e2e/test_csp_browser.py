"""The dashboard under its Content-Security-Policy, in a real Chromium: every page is sent with the
policy, and walking them reports no violation (the inline script has its nonce, Chart.js and our
scripts come from static files, the live meter's websocket is allowed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from gateway import usage
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, serves_static, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()

PAGES = [
    "/",
    "/dashboard/",
    "/usage/",
    "/activity/",
    "/models/",
    "/keys/",
    "/billing/",
    "/org/budgets/",
    "/nope/",
]


def _seed() -> str:
    user = factories.UserFactory.create(email="csp@example.com")
    acct = factories.account(owner=user, balance_micros=2_500_000)
    factories.api_key(acct, name="backend")
    usage.roll_up()
    client = Client()
    client.force_login(user)
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


@pytest.fixture
def browser_page(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    session = orm(_seed)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url)
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": gateway_server.url}]
        )
        assert serves_static(gateway_server.url), "the server must serve its static files"
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def test_the_dashboard_runs_under_its_csp_without_a_violation(browser_page: Any) -> None:
    page = browser_page
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.add_init_script(
        """document.addEventListener("securitypolicyviolation", (e) => {
             console.error("Content Security Policy violation: " + e.violatedDirective
                           + " " + e.blockedURI);
           });"""
    )
    for path in PAGES:
        response = page.goto(path)
        assert response is not None
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self' 'nonce-" in policy, (path, policy)
        assert "frame-ancestors 'none'" in policy
        # The inline script ran (it marks the document as having JavaScript).
        assert page.evaluate("document.documentElement.classList.contains('js')"), path
        page.wait_for_load_state("networkidle")
    # Chart.js drew the usage charts.
    page.goto("/usage/")
    page.wait_for_function("window.tfUsageCharts !== undefined")
    assert violations == [], violations
