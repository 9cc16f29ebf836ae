"""The public catalog page at /models/ without JavaScript: the GET parameters filter and sort, every
row shows its prices, plans, aliases and snippets, and the page costs three queries."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from gateway import catalog
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(db: None) -> None:
    factories.plan()  # the public plans: Test (standard), Token Pro (+premium), Max, Ultra (all)
    factories.model(
        "acme/fast-chat",
        display_name="Fast Chat",
        owned_by="Acme",
        supports_vision=False,
        supports_thinking=False,
        input_price_micros=150_000,
        output_price_micros=600_000,
        context_window=32_000,
        ultrafast=True,
    )
    factories.model(
        "acme/big-think",
        display_name="Big Think",
        owned_by="Acme",
        input_price_micros=3_000_000,
        output_price_micros=15_000_000,
        context_window=200_000,
        tier="premium",
    )
    factories.model(
        "zeta/embed",
        display_name="Zeta Embed",
        owned_by="Zeta Labs",
        kind="embedding",
        supports_tools=False,
        supports_vision=False,
        supports_json=False,
        supports_thinking=False,
        input_price_micros=20_000,
        output_price_micros=0,
        context_window=8_192,
    )
    factories.model(
        "zeta/voice",
        display_name="Zeta Voice",
        owned_by="Zeta Labs",
        kind="speech",
        supports_tools=False,
        supports_vision=False,
        supports_json=False,
        supports_thinking=False,
        input_price_micros=None,
        output_price_micros=None,
        unit="characters",
        unit_price_micros=15_000_000,
        context_window=0,
    )
    factories.model("old/retired", display_name="Retired", is_active=False)


def shown(client: Client, query: str = "") -> list[str]:
    response = client.get(f"/models/{query}")
    assert response.status_code == 200
    return [row.model.model_id for row in response.context["rows"]]


def test_it_lists_only_active_models_sorted_by_name(client: Client, models: None) -> None:
    assert shown(client) == ["acme/big-think", "acme/fast-chat", "zeta/embed", "zeta/voice"]
    page = client.get("/models/").content.decode()
    assert "old/retired" not in page
    assert "Showing 4 of 4 models." in page


def test_it_searches_every_word_in_name_id_and_lab(client: Client, models: None) -> None:
    assert shown(client, "?q=zeta") == ["zeta/embed", "zeta/voice"]
    assert shown(client, "?q=ZETA+voice") == ["zeta/voice"]
    assert shown(client, "?q=fast+chat") == ["acme/fast-chat"]
    assert shown(client, "?q=nothing-like-this") == []
    assert "No models match" in client.get("/models/?q=nothing-like-this").content.decode()


def test_it_filters_by_lab_kind_and_capabilities(client: Client, models: None) -> None:
    assert shown(client, "?provider=Zeta+Labs") == ["zeta/embed", "zeta/voice"]
    assert shown(client, "?kind=embedding") == ["zeta/embed"]
    assert shown(client, "?cap=thinking") == ["acme/big-think"]
    assert shown(client, "?cap=tools&cap=ultrafast") == ["acme/fast-chat"]
    assert shown(client, "?provider=Acme&kind=speech") == []


def test_it_ignores_values_it_does_not_know(client: Client, models: None) -> None:
    everything = shown(client)
    assert shown(client, "?provider=Nobody&kind=video&cap=teleport&sort=random") == everything


def test_it_keeps_token_models_at_or_under_a_max_input_price(client: Client, models: None) -> None:
    assert shown(client, "?max_price=0.15") == ["acme/fast-chat", "zeta/embed"]
    assert shown(client, "?max_price=%243") == ["acme/big-think", "acme/fast-chat", "zeta/embed"]
    assert shown(client, "?max_price=0") == []


def test_it_shows_an_error_for_a_price_that_is_not_dollars(client: Client, models: None) -> None:
    response = client.get("/models/?max_price=cheap")
    page = response.content.decode()
    assert len(response.context["rows"]) == 4
    assert "Enter a price in dollars" in page
    assert 'aria-invalid="true"' in page


def test_it_sorts_by_price_and_by_context(client: Client, models: None) -> None:
    assert shown(client, "?sort=price") == [
        "zeta/embed",
        "acme/fast-chat",
        "acme/big-think",
        "zeta/voice",
    ]
    assert shown(client, "?sort=context") == [
        "acme/big-think",
        "acme/fast-chat",
        "zeta/embed",
        "zeta/voice",
    ]


def test_it_renders_hidden_rows_so_the_browser_can_widen_the_filters(
    client: Client, models: None
) -> None:
    page = client.get("/models/?q=voice").content.decode()
    assert 'data-model="acme/big-think"' in page
    assert len(re.findall(r"<tbody[^>]*>", page)) == 4
    assert len(re.findall(r"<tbody[^>]* hidden>", page)) == 3
    assert "Showing 1 of 4 models." in page


def test_each_row_shows_prices_badge_plans_and_a_copy_button(client: Client, models: None) -> None:
    response = client.get("/models/")
    page = response.content.decode()
    assert "$0.15" in page and "$0.60" in page
    assert "$15.00 per 1M characters" in page
    assert "⚡ UltraFast" in page
    assert 'data-copy-text="acme/fast-chat"' in page
    rows = {row.model.model_id: row for row in response.context["rows"]}
    assert rows["acme/fast-chat"].plans == ["Test", "Token Pro", "Token Max", "Token Ultra"]
    assert rows["acme/big-think"].plans == ["Token Pro", "Token Max", "Token Ultra"]
    assert "Enterprise" not in rows["acme/big-think"].plans


def test_each_row_has_snippets_for_both_sdks_with_the_site_base_urls(
    client: Client, models: None
) -> None:
    page = client.get("/models/?q=fast").content.decode()
    assert 'base_url="http://testserver/openai/v1/"' in page
    assert 'base_url="http://testserver/anthropic/"' in page
    assert 'model="acme/fast-chat"' in page
    assert "client.chat.completions.create(" in page
    assert "client.messages.create(" in page
    assert "client.embeddings.create(" in page  # zeta/embed, rendered hidden
    assert "The Anthropic SDK has no embedding call" in page


def test_the_page_costs_three_queries_however_many_models(
    client: Client, models: None, django_assert_num_queries: Any
) -> None:
    catalog.seed(simulator_url="http://127.0.0.1:9")
    with django_assert_num_queries(3):
        response = client.get("/models/?q=a&cap=tools&sort=price&max_price=5")
    assert response.context["total"] >= 60
    # The seeded aliases are shown with the models they serve.
    (opus,) = [e for e in response.context["entries"] if e.model.model_id == "claude-opus-4-1"]
    assert opus.aliases == ("claude-opus-*", "claude-opus-4-8")
    assert "Also answers to <code>claude-opus-*</code>, <code>claude-opus-4-8</code>" in (
        response.content.decode()
    )
