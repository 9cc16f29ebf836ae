"""The dashboard in a real Chromium against the running ASGI app: sign up, create a key that is
shown once, rotate it, revoke it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from accounts import keys
from accounts.models import ApiKey
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, serves_static, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()


@pytest.fixture
def page(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    factories.plan()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway_server.url)
        assert serves_static(gateway_server.url, "js/app.js"), (
            "the server must serve its static files"
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def test_it_signs_up_creates_rotates_and_revokes_a_key(
    page: Any, gateway_server: ServerThread, settings: Any
) -> None:
    from django.core import mail
    from playwright.sync_api import expect

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the verification mail's task runs in the server

    page.goto("/")
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Email").fill("erin@example.com")
    page.get_by_label("Password", exact=True).fill("a long pass phrase")
    page.get_by_label("Confirm password").fill("a long pass phrase")
    page.get_by_role("button", name="Create account").click()

    # The address is confirmed by the link mailed to it before anything else.
    expect(page.get_by_test_id("signup-sent")).to_contain_text("erin@example.com")
    (message,) = mail.outbox
    link = re.search(r"https?://[^/\s]+(/signup/verify/\S+/)", str(message.body))
    assert link is not None
    page.goto(link.group(1))
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_test_id("rpm")).to_have_text("30")
    expect(page.locator("#openai-base-url")).to_have_text(f"{gateway_server.url}/openai/v1/")
    expect(page.locator("#anthropic-base-url")).to_have_text(f"{gateway_server.url}/anthropic/")

    page.get_by_role("link", name="API keys").first.click()
    page.get_by_label("Name").fill("backend")
    page.get_by_label("Environment").select_option("dev")
    page.get_by_role("button", name="Create key").click()

    reveal = page.get_by_test_id("new-key")
    expect(reveal).to_have_text(re.compile(r"^tf-dev-[a-z0-9]{40}$"))
    secret = reveal.inner_text().strip()
    key = orm(keys.verify, secret)
    assert key is not None and key.name == "backend"
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    page.reload()
    expect(page.get_by_test_id("reveal")).to_have_count(0)
    expect(page.get_by_test_id("hint")).to_have_text(key.hint)
    assert secret not in page.content()

    row = page.locator(f"#key-{key.pk}")
    row.get_by_text("Rotate", exact=True).click()
    row.get_by_label("Grace period (hours)").fill("1")
    row.get_by_role("button", name="Rotate key").click()
    successor_secret = page.get_by_test_id("new-key").inner_text().strip()
    assert successor_secret != secret
    successor = orm(keys.verify, successor_secret)
    assert successor is not None
    assert orm(keys.verify, secret) is not None  # within the grace period
    expect(page.locator(f"#key-{key.pk}").get_by_test_id("status")).to_have_text("Rotating")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#key-{successor.pk}").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("stopped working at once")).to_be_visible()
    expect(page.locator(f"#key-{successor.pk}").get_by_test_id("status")).to_have_text("Revoked")
    assert orm(keys.verify, successor_secret) is None
    assert orm(ApiKey.objects.get, pk=successor.pk).revoked_at is not None
    assert successor_secret not in page.content()


def test_it_creates_and_revokes_a_management_key_listed_apart(page: Any) -> None:
    from playwright.sync_api import expect

    from accounts.models import ManagementKey

    owner = orm(factories.UserFactory.create, email="frank@example.com")
    orm(factories.account, owner=owner)
    page.goto("/login/")
    page.get_by_label("Email").fill("frank@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    page.goto("/keys/")

    section = page.get_by_test_id("management-keys")
    section.get_by_label("Script").fill("deploy script")
    section.get_by_label("Access").select_option("keys:write")
    section.get_by_role("button", name="Create management key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()
    assert re.fullmatch(r"tf-mgmt-[a-z0-9]{40}", secret)
    mkey = orm(keys.verify_management, secret)
    assert mkey is not None and mkey.name == "deploy script"

    page.reload()
    assert secret not in page.content()
    row = page.locator(f"#mgmt-key-{mkey.pk}")
    expect(row.get_by_test_id("status")).to_have_text("Active")
    expect(page.locator("[data-key-id]")).to_have_count(0)  # not among the inference keys
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(f"#mgmt-key-{mkey.pk}").get_by_test_id("status")).to_have_text("Revoked")
    assert orm(ManagementKey.objects.get, pk=mkey.pk).revoked_at is not None
