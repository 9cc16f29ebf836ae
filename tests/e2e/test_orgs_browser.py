"""An invitation end to end in a real Chromium against the running ASGI app: the owner invites a
new address, the invitee signs up through the mailed link and lands in the organisation as a
developer, makes a key, the owner sees it, removes the invitee with their keys, and the key
stops working on /openai/v1 at once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from accounts import keys
from accounts.models import Membership
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, serves_static, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()


@pytest.fixture
def browser(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    factories.plan()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        assert serves_static(gateway_server.url, "js/app.js"), "the server serves static files"
        yield launched
        launched.close()


def _page(browser: Any, base_url: str) -> Any:
    page = browser.new_context(base_url=base_url).new_page()
    page.set_default_timeout(15_000)
    return page


def test_it_invites_a_developer_who_joins_makes_a_key_and_is_removed_with_it(
    browser: Any, gateway_server: ServerThread
) -> None:
    from django.core import mail
    from playwright.sync_api import expect

    owner_user = orm(factories.UserFactory.create, email="olivia@example.com")
    account = orm(factories.account, owner=owner_user)

    owner = _page(browser, gateway_server.url)
    owner.goto("/login/")
    owner.get_by_label("Email").fill("olivia@example.com")
    owner.get_by_label("Password").fill("correct horse battery")
    owner.get_by_role("button", name="Log in").click()
    owner.get_by_role("link", name="Members").click()
    owner.get_by_label("E-mail address").fill("devon@example.com")
    owner.get_by_label("Role", exact=True).select_option("developer")
    owner.get_by_role("button", name="Send invitation").click()
    expect(owner.get_by_text("Invited devon@example.com as developer")).to_be_visible()
    expect(owner.locator('[data-invitation="devon@example.com"]')).to_be_visible()

    (message,) = mail.outbox
    assert message.to == ["devon@example.com"]
    link = re.search(r"https?://[^/\s]+(/invitations/\S+/)", str(message.body))
    assert link is not None

    invitee = _page(browser, gateway_server.url)
    invitee.goto(link.group(1))
    expect(invitee.get_by_role("heading", name=f"Join {account.name}")).to_be_visible()
    expect(invitee.get_by_label("Email")).to_have_value("devon@example.com")
    invitee.get_by_label("Password", exact=True).fill("a long pass phrase")
    invitee.get_by_label("Confirm password").fill("a long pass phrase")
    invitee.get_by_role("button", name="Create account and join").click()
    expect(invitee).to_have_url(re.compile(r"/dashboard/$"))
    expect(
        invitee.get_by_text(f"Welcome to {account.name}. You joined as developer.")
    ).to_be_visible()
    expect(invitee.get_by_test_id("org-select")).to_have_value(str(account.pk))

    invitee.get_by_role("link", name="API keys").first.click()
    invitee.get_by_label("Name").fill("devon's backend")
    invitee.get_by_role("button", name="Create key").click()
    secret = invitee.get_by_test_id("new-key").inner_text().strip()
    key = orm(keys.verify, secret)
    assert key is not None and key.account_id == account.pk
    client = openai.OpenAI(base_url=f"{gateway_server.url}/openai/v1", api_key=secret)
    client.models.list()  # the key works

    owner.get_by_role("link", name="API keys").first.click()
    row = owner.locator(f"#key-{key.pk}")
    expect(row).to_contain_text("devon's backend")
    expect(row.get_by_test_id("created-by")).to_have_text("by devon@example.com")

    owner.get_by_role("link", name="Members").click()
    member_row = owner.locator('[data-member="devon@example.com"]')
    expect(member_row.get_by_test_id("role")).to_have_text("Developer")
    expect(member_row.get_by_label("Revoke the keys they created")).to_be_checked()
    owner.once("dialog", lambda dialog: dialog.accept())
    member_row.get_by_role("button", name="Remove").click()
    expect(owner.get_by_text("Removed devon@example.com. 1 of their key")).to_be_visible()
    expect(owner.locator('[data-member="devon@example.com"]')).to_have_count(0)

    assert not orm(lambda: Membership.objects.filter(user__email="devon@example.com").exists())
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert refused.value.status_code == 401
