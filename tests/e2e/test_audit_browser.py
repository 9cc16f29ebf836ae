"""The audit log in a real Chromium against the running ASGI app: an owner logs in, makes a key,
follows the nav link to the log, reads the entries in their own time zone, filters them and
downloads the CSV; the log-in, the key and the download are each one entry, from this browser."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from accounts.models import AuditEvent
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, serves_static, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()

PASSWORD = "correct horse battery"


@pytest.fixture
def page(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    owner = factories.UserFactory.create(email="olive@example.com")
    factories.account(owner=owner)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            base_url=gateway_server.url,
            accept_downloads=True,
            timezone_id="Asia/Tokyo",
            locale="en-GB",
        )
        assert serves_static(gateway_server.url, "js/app.js")
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_an_owner_reads_filters_and_downloads_the_audit_log(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/login/")
    page.get_by_label("Email").fill("olive@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="API keys").first.click()
    page.get_by_label("Name").fill("backend")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()

    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    table = page.get_by_test_id("audit-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("tbody tr").first).to_contain_text("Created a key")
    expect(table.locator("tbody tr").nth(1)).to_contain_text("Logged in")
    expect(table.locator("thead")).to_contain_text("Asia/Tokyo")
    [login] = orm(_events, "user.login")
    [made] = orm(_events, "key.created")
    assert "Chrome" in login.user_agent and login.ip == "127.0.0.1"
    assert made.user_agent == login.user_agent
    # Shown in the reader's zone (Tokyo is UTC+9); the UTC instant stays in the markup.
    cell = table.locator(f'time[datetime="{made.at.isoformat()}"]')
    tokyo = made.at.astimezone(ZoneInfo("Asia/Tokyo"))
    expect(cell).to_contain_text(f"{tokyo:%H:%M:%S}")

    page.get_by_label("What").select_option("key")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"action=key"))
    expect(table.locator("tbody tr")).to_have_count(1)

    with page.expect_download() as info:
        page.get_by_test_id("audit-csv").click()
    text = Path(info.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["action"] for row in rows] == ["key.created"]
    assert rows[0]["actor"] == "olive@example.com" and secret not in text
    [exported] = orm(_events, "audit.exported")
    assert exported.after == {"action": "key"} and exported.user_agent == login.user_agent
