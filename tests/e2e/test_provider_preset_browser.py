"""The admin's provider form in a real Chromium, under the CSP: picking a preset fills the form
from static/js/provider_preset.js (no inline script), the Azure resource name completes the URL,
and saving stores what was shown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from gateway.models import Provider
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, serves_static, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()


def _admin_session() -> str:
    user = factories.UserFactory.create(email="ops@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


@pytest.fixture
def admin_page(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    session = orm(_admin_session)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url)
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": gateway_server.url}]
        )
        assert serves_static(gateway_server.url, "js/provider_preset.js")
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def test_picking_a_preset_fills_the_provider_form_under_the_csp(admin_page: Any) -> None:
    page = admin_page
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto("/admin/gateway/provider/add/")

    page.select_option("#id_preset", "azure")
    assert page.input_value("#id_base_url") == "https://{resource}.openai.azure.com"
    page.fill("#id_resource", "contoso-eu")

    assert page.input_value("#id_base_url") == "https://contoso-eu.openai.azure.com"
    assert page.input_value("#id_protocol") == "openai"
    assert page.input_value("#id_auth_style") == "api-key"
    assert page.input_value("#id_url_style") == "azure"
    assert page.input_value("#id_api_version") == "2024-10-21"
    assert page.input_value("#id_output_limit_field") == "max_completion_tokens"
    assert page.input_value("#id_api_key_env") == "AZURE_OPENAI_API_KEY"

    page.select_option("#id_preset", "llama-cpp-python")
    assert page.input_value("#id_base_url") == "http://localhost:8000/v1"
    assert page.input_value("#id_tokenizer") == "llama-cpp-python"
    assert not page.is_checked("#id_reports_stream_usage")
    assert page.input_value("#id_tokenizer_url") == "http://localhost:8000/extras/tokenize/count"
    assert page.input_value("#id_auth_style") == "bearer"

    page.fill("#id_slug", "gemma-box")
    page.fill("#id_name", "Gemma box")
    with page.expect_navigation():
        page.click("input[name=_save]")
    errors = page.locator(".errorlist, .errornote").all_inner_texts()
    assert errors == [], errors
    assert page.url.endswith("/admin/gateway/provider/")

    saved = orm(Provider.objects.get, slug="gemma-box")
    assert (saved.preset, saved.base_url, saved.tokenizer) == (
        "llama-cpp-python",
        "http://localhost:8000/v1",
        "llama-cpp-python",
    )
    assert saved.reports_stream_usage is False
    assert violations == [], violations
