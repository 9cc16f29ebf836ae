"""The model catalog in a real Chromium against the running ASGI app: search and filters narrow the
list as you type without a reload, an id copies to the clipboard, a model's snippets open."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serves_static
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _seed() -> None:
    factories.plan()
    plain = {"supports_tools": False, "supports_vision": False, "supports_thinking": False}
    factories.model(
        "acme/fast-chat",
        display_name="Fast Chat",
        owned_by="Acme",
        input_price_micros=150_000,
        ultrafast=True,
        **{**plain, "supports_tools": True},
    )
    factories.model(
        "acme/big-think",
        display_name="Big Think",
        owned_by="Acme",
        input_price_micros=3_000_000,
        output_price_micros=15_000_000,
        tier="premium",
    )
    factories.model(
        "acme/small-chat",
        display_name="Small Chat",
        owned_by="Acme",
        input_price_micros=50_000,
        **plain,
    )
    factories.model(
        "zeta/chat-pro",
        display_name="Zeta Chat Pro",
        owned_by="Zeta Labs",
        input_price_micros=100_000,
        **{**plain, "supports_tools": True},
    )
    factories.model(
        "zeta/embed",
        display_name="Zeta Embed",
        owned_by="Zeta Labs",
        kind="embedding",
        input_price_micros=20_000,
        output_price_micros=0,
        supports_json=False,
        **plain,
    )


@pytest.fixture
def page(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    _seed()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway_server.url)
        assert serves_static(gateway_server.url), "the server must serve its static files"
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def visible_ids(page: Any) -> list[str]:
    return list(
        page.locator("tbody[data-model]:visible").evaluate_all(
            "items => items.map(item => item.dataset.model)"
        )
    )


def test_it_filters_the_catalog_as_you_type_without_a_reload(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/models/")
    count = page.locator("#catalog-count")
    expect(count).to_have_text("Showing 5 of 5 models.")
    page.evaluate("window.notReloaded = true")

    page.get_by_label("Search").press_sequentially("zeta")
    expect(count).to_have_text("Showing 2 of 5 models.")
    assert visible_ids(page) == ["zeta/chat-pro", "zeta/embed"]
    expect(page).to_have_url(re.compile(r"/models/\?q=zeta$"))

    page.get_by_label("Search").fill("chat")
    expect(count).to_have_text("Showing 3 of 5 models.")
    page.get_by_label("Tools").check()
    expect(count).to_have_text("Showing 2 of 5 models.")
    assert visible_ids(page) == ["acme/fast-chat", "zeta/chat-pro"]

    page.get_by_label("Lab").select_option("Acme")
    expect(count).to_have_text("Showing 1 of 5 models.")
    assert visible_ids(page) == ["acme/fast-chat"]

    page.get_by_label("Search").fill("")
    page.get_by_label("Tools").uncheck()
    page.get_by_label("Max input price").fill("0.15")
    expect(count).to_have_text("Showing 2 of 5 models.")
    assert visible_ids(page) == ["acme/fast-chat", "acme/small-chat"]

    page.get_by_label("Max input price").fill("0.01")
    expect(count).to_have_text("Showing 0 of 5 models.")
    expect(page.get_by_role("heading", name="No models match")).to_be_visible()

    page.get_by_label("Lab").select_option("")
    page.get_by_label("Max input price").fill("")
    page.get_by_label("Sort by").select_option("price")
    expect(count).to_have_text("Showing 5 of 5 models.")
    assert visible_ids(page) == [
        "zeta/embed",
        "acme/small-chat",
        "zeta/chat-pro",
        "acme/fast-chat",
        "acme/big-think",
    ]
    assert page.evaluate("window.notReloaded") is True

    # The URL keeps the state, and the server renders the same list from it.
    page.get_by_label("Search").fill("acme")
    expect(page).to_have_url(re.compile(r"/models/\?q=acme&sort=price$"))
    page.reload()
    expect(count).to_have_text("Showing 3 of 5 models.")
    assert visible_ids(page) == ["acme/small-chat", "acme/fast-chat", "acme/big-think"]


def test_it_copies_an_id_and_opens_a_models_snippets(
    page: Any, gateway_server: ServerThread
) -> None:
    from playwright.sync_api import expect

    page.goto("/models/?q=big")
    row = page.locator('tbody[data-model="acme/big-think"]')
    expect(row).to_be_visible()
    expect(row.get_by_text("Token Pro, Token Max, Token Ultra")).to_be_visible()

    row.get_by_role("button", name="Copy", exact=True).first.click()
    expect(row.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "acme/big-think"

    snippet = row.locator("pre").first
    expect(snippet).to_be_hidden()
    row.get_by_text("Code for Big Think").click()
    expect(snippet).to_be_visible()
    expect(snippet).to_contain_text(f'base_url="{gateway_server.url}/openai/v1/"')
    expect(snippet).to_contain_text('model="acme/big-think"')
    anthropic = row.locator("pre").nth(1)
    expect(anthropic).to_contain_text(f'base_url="{gateway_server.url}/anthropic/"')

    row.locator(".code-block").nth(1).get_by_role("button", name="Copy").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("import os\nimport anthropic\n")
    assert 'model="acme/big-think"' in copied


def test_it_shows_cards_on_a_narrow_screen(page: Any) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 800})
    page.goto("/models/")
    expect(page.locator("#catalog-count")).to_have_text("Showing 5 of 5 models.")
    assert page.locator("table.catalog thead").evaluate("el => el.offsetHeight") <= 1
    card = page.locator('tbody[data-model="acme/fast-chat"]')
    assert card.evaluate("el => getComputedStyle(el).display") == "block"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page must not scroll sideways"
