"""Every signed-in page in a real Chromium at a phone's, a laptop's and a wide screen's width:
nothing overflows the page or its header, and every action button is inside the viewport or
inside the frame that scrolls it. Also: the home page and Activity with data, the tokens chart
with 20 models, and a sign-up done with the keyboard alone."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils.timezone import now

from gateway import usage
from gateway.models import UsageRecord
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()

WIDTHS = (390, 1366, 1920)
PAGES = (
    "/dashboard/",
    "/activity/",
    "/usage/?period=week",
    "/keys/",
    "/org/budgets/",
    "/batches/",
    "/models/",
    "/plans/",
    "/billing/",
    "/password/change/",
)

# Any element sticking out of the page's width, and any button or button-like link whose box is
# outside the viewport unless an ancestor scrolls sideways (then it must be inside that frame).
LAYOUT_PROBLEMS = """() => {
  const W = document.documentElement.clientWidth;
  const problems = [];
  const wide = document.documentElement.scrollWidth;
  if (wide > W) problems.push("page " + wide + " > " + W);
  for (const h of document.querySelectorAll("header, .topbar, .sidebar")) {
    if (h.scrollWidth > h.clientWidth + 1) problems.push("header overflows: " + h.className);
  }
  const frameOf = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const s = getComputedStyle(p).overflowX;
      if (s === "auto" || s === "scroll") return p;
    }
    return null;
  };
  for (const b of document.querySelectorAll("button, .btn, summary.btn")) {
    const r = b.getBoundingClientRect();
    if (!r.width || !b.offsetParent) continue;  // hidden
    const frame = frameOf(b);
    const box = frame ? frame.getBoundingClientRect() : { left: 0, right: W };
    const left = frame ? box.left : 0, right = frame ? box.left + frame.scrollWidth : W;
    if (r.left < left - 1 || r.right > right + 1) {
      problems.push("button outside: " + b.textContent.trim());
    }
  }
  return problems;
}"""


def _seed(models: int = 20) -> dict[str, Any]:
    user = factories.UserFactory.create(email="lee@example.com")
    acct = factories.account(owner=user, balance_micros=1_250_000)
    key, _ = factories.api_key(acct, name="production backend")
    factories.api_key(acct, name="a key with a rather long name for the table")
    at = now()
    rows = [
        UsageRecord(
            request_id=f"req_{n:04d}_" + uuid.uuid4().hex[:12],
            account=acct,
            api_key=key,
            surface="openai" if n % 2 else "anthropic",
            model=f"vendor/model-number-{n % models:02d}-instruct",
            status=502 if n % 9 == 0 else 200,
            input_tokens=500 + 37 * n,
            output_tokens=100 + n,
            cost_micros=90 + 7 * n,
            latency_ms=300 + n,
            ttft_ms=80 + n,
            created_at=at - timedelta(minutes=n * 7),
        )
        for n in range(120)
    ]
    UsageRecord.objects.bulk_create(rows)
    usage.roll_up()
    client = Client()
    client.force_login(user)
    return {"session": client.cookies[settings.SESSION_COOKIE_NAME].value, "records": rows}


@pytest.fixture
def browser(transactional_db: None, gateway_server: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    factories.plan()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _page(browser: Any, server: ServerThread, width: int, session: str | None) -> Any:
    context = browser.new_context(
        base_url=server.url, viewport={"width": width, "height": 844 if width < 500 else 900}
    )
    if session:
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": server.url}]
        )
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


@pytest.mark.parametrize("width", WIDTHS)
def test_no_signed_in_page_overflows_and_every_button_is_reachable(
    browser: Any, gateway_server: ServerThread, width: int
) -> None:
    seeded = orm(_seed)
    page = _page(browser, gateway_server, width, seeded["session"])
    for path in PAGES:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert page.evaluate(LAYOUT_PROBLEMS) == [], (path, width)
    # The Keys page with a Rotate form open stays inside its frame too.
    page.goto("/keys/")
    page.get_by_text("Rotate", exact=True).first.click()
    assert page.evaluate(LAYOUT_PROBLEMS) == [], ("/keys/ rotate open", width)
    if width < 960:
        menu = page.locator("[data-menu]")
        assert page.get_by_role("link", name="Activity").is_visible() is False
        menu.click()
        assert menu.get_attribute("aria-expanded") == "true"
        page.get_by_role("link", name="Activity").click()
        page.wait_for_url(re.compile(r"/activity/$"))


@pytest.mark.parametrize("width", (390, 1366))
def test_the_signed_out_header_stays_on_one_row_with_a_legible_sign_up(
    browser: Any, gateway_server: ServerThread, width: int
) -> None:
    page = _page(browser, gateway_server, width, None)
    page.goto("/")
    assert page.evaluate(LAYOUT_PROBLEMS) == []
    header = page.locator(".site-header .container").bounding_box()
    assert header is not None and header["height"] <= 64
    colors = page.get_by_role("link", name="Sign up").evaluate(
        "(el) => [getComputedStyle(el).color, getComputedStyle(el).backgroundColor]"
    )
    assert colors[0] != colors[1]
    assert colors[0] in ("rgb(255, 255, 255)", "rgb(12, 14, 25)")


def test_home_and_activity_show_the_accounts_requests(
    browser: Any, gateway_server: ServerThread
) -> None:
    from playwright.sync_api import expect

    seeded = orm(_seed)
    page = _page(browser, gateway_server, 1366, seeded["session"])
    page.goto("/dashboard/")
    expect(page.get_by_test_id("requests")).to_have_text("120")
    expect(page.locator(".requests-table tbody tr")).to_have_count(8)
    newest = seeded["records"][0].request_id
    expect(page.locator(f'tr[data-request-id="{newest}"]')).to_have_count(1)
    page.get_by_role("link", name="All activity →").click()
    expect(page.locator(".requests-table tbody tr")).to_have_count(50)
    page.get_by_label("Status").select_option("error")
    expect(page).to_have_url(re.compile(r"status=error"))
    statuses = page.get_by_test_id("request-status").all_inner_texts()
    assert statuses and set(statuses) == {"502"}
    page.get_by_label("Request id").fill(newest)
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_test_id("request-id")).to_have_text(newest)


def test_the_tokens_chart_with_20_models_names_the_top_ones_and_keeps_its_plot(
    browser: Any, gateway_server: ServerThread
) -> None:
    seeded = orm(_seed)
    page = _page(browser, gateway_server, 1366, seeded["session"])
    page.goto("/usage/?period=week")
    page.wait_for_function("window.tfUsageCharts !== undefined")
    drawn = page.evaluate(
        """() => {
          const c = window.tfUsageCharts.tokens;
          return {labels: c.data.datasets.map((d) => d.label),
                  plot: c.chartArea.bottom - c.chartArea.top,
                  places: window.tfUsageCharts.cost.moneyPlaces,
                  ticks: window.tfUsageCharts.cost.scales.y.ticks.map((t) => t.label)};
        }"""
    )
    assert len(drawn["labels"]) == 8
    assert drawn["labels"][-1] == "Other (13 models)"
    assert drawn["plot"] >= 150
    # Sub-cent costs: the money axis has enough places for its ticks to differ.
    assert len(set(drawn["ticks"])) == len(drawn["ticks"]) > 2
    assert drawn["places"] > 2


def test_sign_up_with_the_keyboard_alone(browser: Any, gateway_server: ServerThread) -> None:
    from playwright.sync_api import expect

    page = _page(browser, gateway_server, 1366, None)
    page.goto("/signup/")
    page.get_by_label("Email").focus()
    page.keyboard.type("not an email")
    page.keyboard.press("Tab")
    page.keyboard.type("123")
    page.keyboard.press("Tab")
    page.keyboard.type("123")
    page.keyboard.press("Enter")
    # Back with every error at once, the summary focused; Tab reaches its first link.
    summary = page.locator("[data-error-summary]")
    expect(summary).to_be_focused()
    expect(summary.locator('a[href="#id_email"]')).to_have_count(1)
    assert summary.locator('a[href="#id_password1"]').count() >= 1
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("kim@example.com")
    page.keyboard.press("Tab")
    page.keyboard.type("a long pass phrase")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Confirm password")).to_be_focused()
    page.keyboard.type("a long pass phrase")
    page.keyboard.press("Enter")
    # Signed up: the address is confirmed through the mailed link (issue #16).
    expect(page.get_by_test_id("signup-sent")).to_contain_text("kim@example.com")
