"""The usage page in a real Chromium against the running ASGI app: the four charts are drawn with
the account's data, the filters and the CSV export work, and the live meter moves when a request
is metered."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client
from django.utils.timezone import now

from gateway import metering, usage
from gateway.models import UsageRecord
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serves_static, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()


def _seed() -> dict[str, Any]:
    user = factories.UserFactory.create(email="dana@example.com")
    acct = factories.account(owner=user, balance_micros=2_500_000)
    key, _ = factories.api_key(acct, name="backend")
    at = now()
    rows = []
    for day in range(3):
        for n, (model, surface, status) in enumerate(
            [
                ("sim-gpt", "openai", 200),
                ("sim-claude", "anthropic", 200),
                ("sim-gpt", "anthropic", 200),
                ("sim-claude", "openai", 502),
            ]
        ):
            rows.append(
                UsageRecord(
                    request_id=uuid.uuid4().hex,
                    account=acct,
                    api_key=key,
                    surface=surface,
                    model=model,
                    status=status,
                    input_tokens=1_000 * (n + 1),
                    output_tokens=250 * (day + 1),
                    cost_micros=40_000 * (n + 1),
                    created_at=at - timedelta(days=day, minutes=5),
                )
            )
    UsageRecord.objects.bulk_create(rows)
    usage.roll_up()
    client = Client()
    client.force_login(user)
    return {
        "user": user,
        "account": acct,
        "key": key,
        "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }


@pytest.fixture
def signed_in(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    seeded = {**_seed(), "server": gateway_server}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url, accept_downloads=True)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": seeded["session"],
                    "url": gateway_server.url,
                }
            ]
        )
        assert serves_static(gateway_server.url, "js/usage.js"), (
            "the server must serve its static files"
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page, seeded
        context.close()
        browser.close()


def test_it_draws_the_usage_charts_with_the_accounts_data(signed_in: Any) -> None:
    from playwright.sync_api import expect

    page, _ = signed_in
    page.goto("/usage/?period=week")
    expect(page.get_by_role("heading", name="Usage")).to_be_visible()
    expect(page.get_by_test_id("total-requests")).to_have_text("12")
    page.wait_for_function("window.tfUsageCharts !== undefined")

    drawn = page.evaluate(
        """() => {
          const c = window.tfUsageCharts;
          const sum = (xs) => xs.reduce((a, b) => a + (b || 0), 0);
          return {
            models: c.tokens.data.datasets.map((d) => d.label),
            tokens: sum(c.tokens.data.datasets.map((d) => sum(d.data))),
            days: c.tokens.data.labels.length,
            cost: sum(c.cost.data.datasets[0].data),
            surfaces: c.surfaces.data.labels,
            bySurface: c.surfaces.data.datasets[0].data,
            errors: sum(c.errors.data.datasets[0].data),
            painted: ["chart-tokens", "chart-cost", "chart-surfaces", "chart-errors"].map(
              (id) => {
                const canvas = document.getElementById(id);
                return canvas.width > 0 && canvas.height > 0 && !!Chart.getChart(canvas);
              }
            ),
          };
        }"""
    )
    assert drawn["models"] == ["sim-claude", "sim-gpt"]
    # 3 days x (1,000 + 2,000 + 3,000 + 4,000) input + (250 + 500 + 750) x 4 output
    assert drawn["tokens"] == 30_000 + 6_000
    # Last 7 days is charted by the hour: every hour from the first day's midnight to now.
    start = (now() - timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert drawn["days"] == int((now() - start).total_seconds() // 3600) + 1
    assert drawn["cost"] == pytest.approx(3 * (0.04 + 0.08 + 0.12 + 0.16))
    assert drawn["surfaces"] == ["Anthropic", "OpenAI"]
    assert drawn["bySurface"] == [6, 6]
    assert drawn["errors"] == 3
    assert drawn["painted"] == [True, True, True, True]
    # Pixels, not just objects: the stacked bar chart's canvas is not blank.
    blank = page.evaluate(
        """() => {
          const canvas = document.getElementById("chart-tokens");
          const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
          for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return false;
          return true;
        }"""
    )
    assert blank is False
    expect(page.locator("[aria-labelledby=table-title] tbody tr")).to_have_count(6)
    expect(page.get_by_test_id("usage-by-member").locator("tbody tr")).to_have_count(1)


def test_it_filters_exports_and_moves_the_live_meter(signed_in: Any) -> None:
    from playwright.sync_api import expect

    page, seeded = signed_in
    server = seeded["server"]
    page.goto("/usage/?period=week")
    page.get_by_label("Model", exact=True).select_option("sim-gpt")
    expect(page).to_have_url(re.compile(r"model=sim-gpt"))
    expect(page.get_by_test_id("total-requests")).to_have_text("6")

    with page.expect_download() as info:
        page.get_by_test_id("export").click()
    body = Path(info.value.path()).read_text()
    lines = body.strip().splitlines()
    assert lines[0].startswith("day,model,surface,key_id,key_name,requests")
    assert all(",sim-gpt," in line for line in lines[1:])
    assert sum(int(line.split(",")[5]) for line in lines[1:]) == 6

    expect(page.get_by_test_id("meter-balance")).to_have_text("$2.50")
    # The socket's first frame (the state on connect) has arrived.
    page.wait_for_function("Number(document.querySelector('[data-meter]').dataset.updates) >= 1")
    acct, key = seeded["account"], seeded["key"]
    record = metering.UsageRecord(
        request_id=uuid.uuid4().hex,
        account_id=acct.pk,
        key_id=key.pk,
        surface="openai",
        model="sim-gpt",
        status=200,
        input_tokens=10,
        output_tokens=5,
        created_at_ms=int(now().timestamp() * 1000),
    )
    before = page.get_by_test_id("meter-rpm").inner_text()
    # Flushed from the server's event loop, as the gateway's own background drain does.
    server.call(sync_to_async(metering.flush)([record]))
    expect(page.get_by_test_id("meter-rpm")).not_to_have_text(before)
