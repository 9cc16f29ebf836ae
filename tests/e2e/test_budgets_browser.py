"""The Budgets page in a real Chromium: an owner sees each member's and key's spend against its
cap as a bar, and sets a member's cap in dollars."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils.timezone import now

from accounts.models import Membership
from gateway.models import UsageRecord
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()


def _seed() -> dict[str, Any]:
    owner = factories.UserFactory.create(email="olga@example.com")
    acct = factories.account(owner=owner)
    dev = factories.UserFactory.create(email="dev@example.com")
    member = Membership.objects.create(
        user=dev, account=acct, role=Membership.Role.DEVELOPER, monthly_budget_micros=4_000_000
    )
    key, _ = factories.api_key(acct, name="dev's key", created_by=dev)
    UsageRecord.objects.create(
        request_id=uuid.uuid4().hex,
        account=acct,
        api_key=key,
        surface="openai",
        model="sim-gpt",
        status=200,
        cost_micros=3_000_000,
        created_at=now(),
    )
    client = Client()
    client.force_login(owner)
    return {
        "member": member,
        "key": key,
        "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }


@pytest.fixture
def signed_in(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    seeded = _seed()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": seeded["session"],
                    "url": gateway_server.url,
                }
            ]
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page, seeded
        context.close()
        browser.close()


def test_an_owner_sees_spend_against_caps_and_sets_a_members_cap(signed_in: Any) -> None:
    from playwright.sync_api import expect

    page, seeded = signed_in
    member, key = seeded["member"], seeded["key"]
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else 0)
    page.goto("/dashboard/")
    page.get_by_role("link", name="Budgets").click()
    expect(page.get_by_role("heading", name="Budgets", exact=True)).to_be_visible()
    row = page.locator(f"#member-{member.pk}")
    expect(row.get_by_test_id("spent")).to_have_text("$3.00")
    expect(row.get_by_test_id("cap")).to_have_text("$4.00")
    expect(row.locator("meter")).to_have_attribute("value", "75")
    expect(page.locator(f"#key-{key.pk}").get_by_test_id("spent")).to_have_text("$3.00")
    if os.environ.get("TF_SCREENSHOTS"):
        page.screenshot(path=os.environ["TF_SCREENSHOTS"] + "/budgets.png", full_page=True)

    row.get_by_label("Cap in dollars").fill("12.50")
    row.get_by_role("button", name="Save").click()
    expect(page.get_by_text("The budget of dev@example.com is now $12.50 a month.")).to_be_visible()
    row = page.locator(f"#member-{member.pk}")
    expect(row.get_by_test_id("cap")).to_have_text("$12.50")
    expect(row.locator("meter")).to_have_attribute("value", "24")
    orm(member.refresh_from_db)
    assert member.monthly_budget_micros == 12_500_000

    page.locator(f"#key-{key.pk}").get_by_label("Cap in dollars").fill("ten")
    page.locator(f"#key-{key.pk}").get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("budget-error")).to_contain_text("write it like 25 or 12.50")
    assert violations == []
